"""Cost of `privbench audit` on 10,000 release images against 10,000 originals (64×64 PNG), as a ratio to a plain
feature-extraction pass over the same images, measured in one run on one machine (docs/BENCHMARKS.md).

    python benchmarks/audit_speed.py [--images 10000] [--workdir /tmp/privbench-audit-speed]

The reference pass reads both folders with the audit's loader and computes the near-copy features (the canonical
images and thumbnails of benchmark/audit/copies.py): what any audit must do at least once per image. The audit adds
the candidate search (faiss, exact, 9 query shifts), the FFT verification of the candidates, the leave-one-out
baseline, the bootstrap CIs, face and people detection on its default sample of 500 images per set, and the
report. The images are synthetic scenes (tests/test_audit.py's generator) with 10% planted
near-copies; they are written once and reused.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's privbench and tests


def _write_sets(root: Path, n: int) -> None:
    from PIL import Image

    from tests.test_audit import scene

    if (root / "done").is_file() and (root / "done").read_text() == str(n):
        return
    shutil.rmtree(root, ignore_errors=True)
    for d in ("orig", "rel"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    originals = [scene(rng) for _ in range(n)]
    for i, a in enumerate(originals):
        Image.fromarray(a).save(root / "orig" / f"o{i:05d}.png")
    planted = set(rng.choice(n, n // 10, replace=False).tolist())
    for i in range(n):
        if i in planted:
            buf = io.BytesIO()
            Image.fromarray(np.roll(originals[i], 1, axis=1)).save(buf, "JPEG", quality=75)
            (root / "rel" / f"p{i:05d}.jpg").write_bytes(buf.getvalue())
        else:
            Image.fromarray(scene(rng)).save(root / "rel" / f"c{i:05d}.png")
    (root / "done").write_text(str(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--workdir", default="/tmp/privbench-audit-speed")
    args = ap.parse_args()

    import torch

    from privbench.audit import AuditConfig, run_audit
    from privbench.audit.copies import canonical
    from privbench.audit.loader import read_folder
    from privbench.audit.report import write_report
    from privbench.core.provenance import cpu_model

    root = Path(args.workdir)
    t0 = time.perf_counter()
    _write_sets(root, args.images)
    print(f"images ready ({time.perf_counter() - t0:.1f} s): {args.images} release + {args.images} originals, 64x64")

    t0 = time.perf_counter()
    for d in ("rel", "orig"):
        f = read_folder(root / d)
        canonical(f.images)
    reference = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = run_audit(AuditConfig(release=root / "rel", originals=root / "orig", out=root / "report",
                                   progress=False))
    write_report(result)
    audit = time.perf_counter() - t0
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    near = next(r for r in result.risks if r.name == "near-copy")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"reference pass (read + canonical near-copy features): {reference:.1f} s")
    print(f"audit (read, near-copy, linkage, faces, people, report): {audit:.1f} s ({steps})")
    print(f"ratio audit / reference: {audit / reference:.2f}")
    print(f"near-copy: flagged share {near.estimate:.3f} (10% planted), value {near.value:.3f} "
          f"[{near.lo:.3f}, {near.hi:.3f}]")


if __name__ == "__main__":
    main()
