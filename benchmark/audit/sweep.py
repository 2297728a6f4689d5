"""The near-copy audit's perturbation sweep (issue 26; docs/AUDIT.md): recall of edited copies and false flags of
fresh images, per edit of :data:`.edits.SWEEP`, on a built-in dataset, with ``--aux`` and leave-one-out. Every
image goes through the audit's own loader (PNG, or the edit's JPEG/WebP bytes), and the statistic and threshold are
the audit's (:func:`.risks.near_copy`'s). The command is ``python benchmarks/audit_sweep.py``; the tests call
:func:`sweep` at smaller sizes.
"""

from __future__ import annotations

import io
import zlib

import numpy as np


def _pool(name: str, n: int) -> np.ndarray:
    import privbench.data  # noqa: F401  (fills the dataset registry)
    from privbench.core.registry import DATASETS

    p = DATASETS.get(name)({})
    x = (p.images.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    x = x.repeat(3, -1) if x.shape[-1] == 1 else x
    if len(x) < n:
        raise SystemExit(f"{name} has {len(x)} images, the sweep needs {n}")
    return x[np.random.default_rng(0).permutation(len(x))[:n]]


def _read(a: np.ndarray) -> np.ndarray:
    """The audit loader's view of ``a`` written as a PNG (the edits that re-encode have already done so)."""
    from PIL import Image

    from privbench.audit.loader import load_image_bytes

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return load_image_bytes(buf.getvalue(), 64)[0]


def sweep(dataset: str, originals: int, copies: int, fresh: int, rate: float,
          edits: tuple[str, ...] | None = None) -> list[dict]:
    """One row per edit (``edits``: names of :data:`.edits.SWEEP`, default all): recall with aux and leave-one-out,
    the share of copies whose original was among the candidates, and the false-flag rate of the fresh images; a
    last row gives the shares of flat and of weak originals (:data:`.copies.FLAT`, :data:`.copies.STRUCTURED`) and
    the recall of the combined edit on weak originals (``weak recall``, by baseline). ``originals`` originals and as many aux images and ``fresh`` fresh images, disjoint,
    from the dataset's pool; ``copies`` originals with structure are edited per edit."""
    from privbench.audit import copies as cp
    from privbench.audit.edits import SWEEP
    from privbench.audit.risks import NEAR_COPY_TESTS, _conformal, _nndr

    x = _pool(dataset, 2 * originals + fresh)
    orig, aux, new = x[:originals], x[originals:2 * originals], x[2 * originals:]
    c_o, c_a, c_f = (cp.canonical(np.stack([_read(a) for a in s])) for s in (orig, aux, new))
    per = rate / len(NEAR_COPY_TESTS)
    base = {"aux": _nndr(cp.copy_distances(c_a, c_o)[0]),
            "leave-one-out": _nndr(cp.copy_distances(c_o, c_o, exclude_self=True)[0])}
    base = {k: np.sort(v) for k, v in base.items()}
    f_stat = _nndr(cp.copy_distances(c_f, c_o)[0])
    rows = []
    testable = np.flatnonzero(c_o.structured)
    for name, edit in SWEEP.items():
        if edits is not None and name not in edits:
            continue
        g = np.random.default_rng(zlib.crc32(name.encode()))
        src = np.sort(g.choice(testable, min(copies, len(testable)), replace=False))
        c_c = cp.canonical(np.stack([_read(edit(orig[i], g)) for i in src]))
        d, idx = cp.copy_distances(c_c, c_o)
        stat = _nndr(d)
        row = {"dataset": dataset, "edit": name, "copies": len(src), "found": float(np.mean(idx[:, 0] == src))}
        for k, b in base.items():
            row[f"recall {k}"] = float(_conformal(b, stat, per).mean())
            row[f"false flags {k}"] = float(_conformal(b, f_stat, per).mean())
        rows.append(row)
    weak = np.flatnonzero(~c_o.structured & ~c_o.flat)
    name = next(k for k in SWEEP if k.startswith("combined"))
    g = np.random.default_rng(zlib.crc32(("weak " + name).encode()))
    src = np.sort(g.choice(weak, min(copies, len(weak)), replace=False))
    weak_recall = {}
    if len(src):
        stat = _nndr(cp.copy_distances(cp.canonical(np.stack([_read(SWEEP[name](orig[i], g)) for i in src])), c_o)[0])
        weak_recall = {k: float(_conformal(b, stat, per).mean()) for k, b in base.items()}
    rows.append({"dataset": dataset, "flat originals": float(c_o.flat.mean()),
                 "weak originals": float(len(weak) / len(c_o.rms)), "weak copies": len(src),
                 "weak recall": weak_recall, "fresh": len(new)})
    return rows
