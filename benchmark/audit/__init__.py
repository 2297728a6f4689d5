"""``privbench audit``: what leaks from an image (or video) dataset release before it is published (docs/AUDIT.md).

:func:`run_audit` reads the release, the originals and optional auxiliary images (:mod:`.loader`), measures each
risk against its baseline (:mod:`.risks`) and :func:`write_report` writes ``report.html``, ``report.md``,
``flagged.csv`` and ``summary.json`` (:mod:`.report`) into a fresh directory, atomically: a failed audit leaves no
half-written report.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from privbench.audit.features import SPACES
from privbench.audit.loader import Folder, read_folder
from privbench.audit.risks import LINKAGE_MIN_PAIRS, Risk, aligned_pairs, detections, linkage, membership, near_copy
from privbench.core.errors import InputError

#: Risks by name, in report order (``membership`` only with a model).
RISKS = ("near-copy", "linkage", "faces", "people", "membership")


@dataclass(frozen=True)
class AuditConfig:
    """What to audit and how. ``fail_on``: risk name -> threshold on its calibrated value (exit 1 above it)."""

    release: Path
    originals: Path
    out: Path
    aux: Optional[Path] = None
    fail_on: tuple[tuple[str, float], ...] = ()
    size: int = 64
    false_flag_rate: float = 0.01
    detect_max: int = 500
    seed: int = 0
    progress: bool = True
    model: Optional[Path] = None  # a released model: its membership risk (needs aux and labels)
    model_arch: str = "convnet"
    model_width: Optional[int] = None
    model_size: int = 32
    labels: Optional[Path] = None

    def __post_init__(self) -> None:
        if self.model is not None and (self.aux is None or self.labels is None):
            raise InputError("--model needs --aux (images the model was not trained on) and --labels (file,label)")
        if (self.labels is not None) and self.model is None:
            raise InputError("--labels is only used with --model")
        unknown = sorted({name for name, _ in self.fail_on} - set(RISKS))
        if unknown:
            raise InputError(f"--fail-on: unknown risk(s) {', '.join(unknown)}; known: {', '.join(RISKS)}")
        if not 0 < self.false_flag_rate < 0.5:
            raise InputError(f"--false-flag-rate must lie in (0, 0.5), got {self.false_flag_rate}")
        if self.size < 16:
            raise InputError(f"--size must be >= 16 pixels, got {self.size}")
        if self.detect_max < 1:
            raise InputError(f"--detect-max must be >= 1, got {self.detect_max}")


def parse_fail_on(items: list[str]) -> tuple[tuple[str, float], ...]:
    """``["near-copy=0.05", ...]`` -> ``(("near-copy", 0.05), ...)``; bad syntax raises :class:`InputError`."""
    out = []
    for item in items:
        m = re.fullmatch(r"\s*([a-z-]+)\s*=\s*([-+0-9.eE]+)\s*", item)
        if not m:
            raise InputError(f"--fail-on {item!r}: expected RISK=THRESHOLD, e.g. near-copy=0.05")
        try:
            out.append((m.group(1), float(m.group(2))))
        except ValueError:
            raise InputError(f"--fail-on {item!r}: {m.group(2)!r} is not a number") from None
    return tuple(out)


@dataclass
class AuditResult:
    config: AuditConfig
    release: Folder
    originals: Folder
    aux: Optional[Folder]
    risks: list[Risk]
    seconds: dict[str, float] = field(default_factory=dict)

    def failures(self) -> list[str]:
        """``--fail-on`` thresholds exceeded by the value's point estimate; a gated risk that could not be measured
        fails too (a gate never passes for want of a number)."""
        import math

        by = {r.name: r for r in self.risks}
        out = []
        for name, limit in self.config.fail_on:
            r = by.get(name)
            if r is None or r.value is None or not math.isfinite(r.value):
                why = "not requested" if r is None else (r.reason or "no finite value")
                out.append(f"{name}: not measured ({why})")
            elif r.value > limit:
                out.append(f"{name}: {r.value:.3f} > {limit:g}")
        return out


def run_audit(cfg: AuditConfig) -> AuditResult:
    """Read the inputs and measure every requested risk. Bad input raises :class:`InputError` before any output."""
    from tqdm import tqdm

    from privbench.audit.output import check_out

    check_out(cfg.out, [p for p in (cfg.release, cfg.originals, cfg.aux) if p is not None])
    t0 = time.perf_counter()
    read = dict(size=cfg.size, progress=cfg.progress)
    release = read_folder(cfg.release, what="release", **read)
    originals = read_folder(cfg.originals, what="originals", **read)
    aux = read_folder(cfg.aux, what="aux", **read) if cfg.aux is not None else None
    seconds = {"read": time.perf_counter() - t0}
    features: dict[str, dict[str, np.ndarray]] = {}
    if len(aligned_pairs(release, originals)) >= LINKAGE_MIN_PAIRS:  # only linkage uses these feature spaces
        t0 = time.perf_counter()
        sets = {"release": release, "originals": originals}
        features = {k: {} for k in sets}
        steps = [(k, s) for k in sets for s in SPACES]
        for k, s in tqdm(steps, desc="features", disable=not cfg.progress, dynamic_ncols=True):
            features[k][s] = SPACES[s].extract(sets[k].images)
        seconds["features"] = time.perf_counter() - t0
    rng = np.random.default_rng(cfg.seed)
    reference = aux if aux is not None else originals
    risks: list[Risk] = []
    names = [r for r in RISKS if r != "membership" or cfg.model is not None]
    for name in tqdm(names, desc="risks", disable=not cfg.progress, dynamic_ncols=True):
        t0 = time.perf_counter()
        if name == "near-copy":
            risks.append(near_copy(release, originals, aux, cfg.false_flag_rate, rng))
        elif name == "linkage":
            risks.append(linkage(release, originals, features, rng))
        elif name == "membership":
            risks.append(_membership(cfg, originals, aux, rng))
        else:
            risks.append(detections(release, reference, name, rng, cfg.detect_max))
        seconds[name] = time.perf_counter() - t0
    return AuditResult(cfg, release, originals, aux, risks, seconds)


def _membership(cfg: AuditConfig, originals: Folder, aux: Optional[Folder], rng: np.random.Generator) -> Risk:
    from privbench.audit.model import load_model, read_labels, scores

    assert cfg.model is not None and cfg.labels is not None and aux is not None
    model = load_model(cfg.model, cfg.model_arch, cfg.model_width)
    labels = read_labels(cfg.labels)
    s_in, i_in = scores(model, originals, labels, cfg.model_size)
    s_out, i_out = scores(model, aux, labels, cfg.model_size)
    merged = {k: np.concatenate([s_in[k], s_out[k]]) for k in s_in}
    member = np.concatenate([np.ones(len(i_in), bool), np.zeros(len(i_out), bool)])
    names = [f"originals/{originals.names[i]}" for i in i_in] + [f"aux/{aux.names[i]}" for i in i_out]
    return membership(merged, member, rng, names)


def config_dict(cfg: AuditConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
