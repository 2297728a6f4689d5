"""Verdicts on the papers' claims (docs/METHODS.md), computed from a suite's records.

Each claim is a difference whose sign the paper asserts, measured per seed on paired configs (same seeds, so same
splits and targets) and combined over seeds with :func:`benchmark.stats.combine`. The verdict is ``confirmed`` or
``refuted`` only when the 95% CI of that difference excludes 0, else ``inconclusive``
(:func:`benchmark.stats.verdict`). A claim whose configs the suite did not run is simply absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd

from ..stats import Interval, binomial_variance, combine, verdict


@dataclass(frozen=True)
class ClaimResult:
    """One tested statement: ``difference`` is claimed ``> 0`` (``positive``) or ``< 0``."""

    claim: str
    statement: str
    dataset: str
    difference: Interval
    positive: bool
    unit: str

    @property
    def verdict(self) -> str:
        return verdict(self.difference, self.positive)


def _params(df: pd.DataFrame) -> list[dict]:
    return [json.loads(p) for p in df.defense_params]


def _select(ok: pd.DataFrame, defense: str, **params: object) -> pd.DataFrame:
    d = ok[ok.defense == defense]
    if d.empty:
        return d
    keep = [all(p.get(k) == v for k, v in params.items()) for p in _params(d)]
    return d[np.array(keep, dtype=bool)]


def _per_seed(d: pd.DataFrame, column: str) -> pd.Series:
    return d.dropna(subset=[column]).groupby("seed")[column].mean()


def _paired(a: pd.DataFrame, b: pd.DataFrame, column: str, binomial: bool = False) -> Optional[Interval]:
    """``a - b`` of ``column`` on the seeds both ran; within-seed variance binomial for accuracies, else taken
    from ``{column}_se`` when recorded, else 0 (between-seed spread only)."""
    x, y = _per_seed(a, column), _per_seed(b, column)
    seeds = sorted(set(x.index) & set(y.index))
    if not seeds:
        return None
    x, y = x.loc[seeds].to_numpy(float), y.loc[seeds].to_numpy(float)
    if binomial:
        n = a.groupby("seed").test_size.first().loc[seeds].to_numpy(int)
        var = [binomial_variance(p, k) + binomial_variance(q, k) for p, q, k in zip(x, y, n)]
    else:
        var = np.zeros(len(seeds))
    return combine(x - y, var)


def _advantage(d: pd.DataFrame) -> Optional[Interval]:
    per = d.dropna(subset=["advantage"]).groupby("seed").first()
    return None if per.empty else combine(per.advantage.to_numpy(float), per.advantage_se.to_numpy(float) ** 2)


def claim_c1(ok: pd.DataFrame) -> list[ClaimResult]:
    """C1 (Azizian & Bajić): adversarial training (w_rec = 1) lowers inversion PSNR against the plain autoencoder
    (w_rec = 0) of the same bottleneck and bits (paper: about 0.8 dB)."""
    out = []
    inv = ok[ok.attack == "inversion-decoder"]
    for dataset, d in inv.groupby("dataset", sort=True):
        adv = _select(d, "split-ae", w_rec=1.0)
        for config in sorted({json.dumps({k: v for k, v in p.items() if k != "w_rec"}, sort_keys=True)
                              for p in _params(adv)}):
            rest = json.loads(config)
            plain = _select(d, "split-ae", w_rec=0.0, **rest)
            mine = _select(adv, "split-ae", **rest)
            i = _paired(plain, mine, "primary")
            if i is not None and len(plain) and len(mine):
                label = ", ".join(f"{k}={v}" for k, v in rest.items() if k in ("bottleneck", "bits"))
                out.append(ClaimResult("C1", f"PSNR(plain AE) − PSNR(split-ae) > 0 [{label}]", dataset, i, True,
                                       "dB"))
    return out


def claim_c3(ok: pd.DataFrame) -> list[ClaimResult]:
    """C3 (Li et al., VisualMixer): identity (linkage) attacks fail, i.e. the linker's calibrated advantage is
    not above 0; and the accuracy loss is small (paper: about 2.35 pp; tested: drop < 5 pp)."""
    out = []
    for dataset, d in ok[ok.defense == "visualmixer"].groupby("dataset", sort=True):
        for params, g in d.groupby("defense_params", sort=True):
            label = g.config.iloc[0]
            link = g[g.threat == "linker"]
            best = max((i for _, h in link.groupby("attack_name") if (i := _advantage(h)) is not None),
                       key=lambda i: i.mean, default=None)
            if best is not None:
                out.append(ClaimResult("C3", f"linker advantage < 0 [{label}]", dataset, best, False, "advantage"))
            per = g.groupby("seed").first()
            if per["drop"].notna().all() and len(per):
                n = per.test_size.to_numpy(int)
                var = [binomial_variance(p, k) + binomial_variance(p + dr, k)
                       for p, dr, k in zip(per.utility.to_numpy(float), per["drop"].to_numpy(float), n)]
                out.append(ClaimResult("C3", f"drop vs none − 5 pp < 0 [{label}]", dataset,
                                       combine(per["drop"].to_numpy(float) - 0.05, var), False, "top-1"))
    return out


def claim_c4(ok: pd.DataFrame) -> list[ClaimResult]:
    """C4 (Li et al., masking): masknet improves accuracy on masked images over plain retraining (paper: up to
    +9.34 pp), at each masked share."""
    out = []
    for dataset, d in ok[ok.defense == "masking"].groupby("dataset", sort=True):
        for masked in sorted({p.get("masked") for p in _params(d)}):
            on, off = _select(d, "masking", masked=masked, masknet=True), _select(d, "masking", masked=masked,
                                                                                  masknet=False)
            i = _paired(on, off, "utility", binomial=True) if len(on) and len(off) else None
            if i is not None:
                out.append(ClaimResult("C4", f"utility(masknet) − utility(plain) > 0 [masked={masked}]", dataset,
                                       i, True, "top-1"))
    return out


def claim_c5(ok: pd.DataFrame) -> list[ClaimResult]:
    """C5 (Soufleri et al.): training on the synthetic set is comparable to training on real data (tested: within
    5 pp of `none`), and originals are far from every synthetic image (nearest-neighbour best-match advantage over
    held-out non-members not above 0)."""
    out = []
    for dataset, d in ok[ok.defense == "bn-synthetic"].groupby("dataset", sort=True):
        per = d.groupby("seed").first()
        if per["drop"].notna().all() and len(per):
            n = per.test_size.to_numpy(int)
            var = [binomial_variance(p, k) + binomial_variance(p + dr, k)
                   for p, dr, k in zip(per.utility.to_numpy(float), per["drop"].to_numpy(float), n)]
            out.append(ClaimResult("C5", "drop vs none − 5 pp < 0", dataset,
                                   combine(per["drop"].to_numpy(float) - 0.05, var), False, "top-1"))
        nn = _advantage(d[d.attack == "nearest-neighbour"])
        if nn is not None:
            out.append(ClaimResult("C5", "nearest-synthetic best-match advantage < 0", dataset, nn, False,
                                   "advantage"))
    return out


CLAIMS: dict[str, Callable[[pd.DataFrame], list[ClaimResult]]] = {
    "C1": claim_c1, "C3": claim_c3, "C4": claim_c4, "C5": claim_c5}


def evaluate_claims(ok: pd.DataFrame) -> list[ClaimResult]:
    """Every claim the suite's records can test, in claim order."""
    return [r for key in sorted(CLAIMS) for r in CLAIMS[key](ok)]
