"""Verdicts on the papers' claims (docs/METHODS.md), computed from a suite's records.

Each claim is a difference whose sign the paper asserts, measured per seed on paired configs (same seeds, so same
splits and targets) and combined over seeds with :func:`privbench.core.stats.combine`. The verdict is ``confirmed`` or
``refuted`` only when the 95% CI of that difference excludes 0, else ``inconclusive``
(:func:`privbench.core.stats.verdict`). A claim whose configs the suite did not run is simply absent.

A claim that an attack *fails* is tested as ``advantage − MARGIN < 0``: a truly uninformative release (advantage ≈ 0)
can then be confirmed, and an attack that merely does worse than its prior confirms nothing, because the attack
must also have passed its competence gate on the reference defense (otherwise the verdict is ``inconclusive``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from privbench.core.stats import Interval, verdict
from privbench.report.intervals import advantage_interval, competence, paired_interval, utility_interval

#: Largest calibrated advantage that still counts as "the attack fails" (the issue's |mean| ≤ 0.05 tolerance).
MARGIN = 0.05


@dataclass(frozen=True)
class ClaimResult:
    """One tested statement: ``difference`` is claimed ``> 0`` (``positive``) or ``< 0``."""

    claim: str
    statement: str
    dataset: str
    difference: Interval
    positive: bool
    unit: str
    gated: bool = True  # False: the attack the claim rests on failed its competence gate

    @property
    def verdict(self) -> str:
        return verdict(self.difference, self.positive) if self.gated else "inconclusive (attack failed)"


def _params(df: pd.DataFrame) -> list[dict]:
    return [json.loads(p) for p in df.defense_params]


def _select(ok: pd.DataFrame, defense: str, **params: object) -> pd.DataFrame:
    d = ok[ok.defense == defense]
    if d.empty:
        return d
    keep = [all(p.get(k) == v for k, v in params.items()) for p in _params(d)]
    return d[np.array(keep, dtype=bool)]


def _competent(ok: pd.DataFrame, dataset: str, attack_name: str) -> bool:
    """The attack beats its prior on the dataset's reference defense (the tables' competence gate)."""
    gate = competence(ok[(ok.dataset == dataset) & (ok.attack_name == attack_name)]).get((dataset, attack_name))
    return gate is not None and gate.competent


def _drop_claim(claim: str, d: pd.DataFrame, dataset: str, label: str) -> list[ClaimResult]:
    """``drop vs the reference − 5 pp < 0`` for one config (binomial within-seed variances of both accuracies)."""
    i = utility_interval(d, "drop", shift=0.05) if d["drop"].notna().all() else None
    return [] if i is None else [ClaimResult(claim, f"drop vs none − 5 pp < 0 [{label}]", dataset, i, False, "top-1")]


def claim_c1(ok: pd.DataFrame) -> list[ClaimResult]:
    """C1 (Azizian & Bajić): adversarial training (w_rec = 1) lowers inversion PSNR against the plain autoencoder
    (w_rec = 0) of the same bottleneck and bits (paper: about 0.8 dB)."""
    out = []
    inv = ok[ok.attack == "inversion-decoder"]
    for (dataset, _), d in inv.groupby(["dataset", "attack_name"], sort=True):
        adv = _select(d, "split-ae", w_rec=1.0)
        for config in sorted({json.dumps({k: v for k, v in p.items() if k != "w_rec"}, sort_keys=True)
                              for p in _params(adv)}):
            rest = json.loads(config)
            plain = _select(d, "split-ae", w_rec=0.0, **rest)
            mine = _select(adv, "split-ae", **rest)
            i = paired_interval(plain, mine, "primary")
            if i is not None and len(plain) and len(mine):
                label = ", ".join(f"{k}={v}" for k, v in rest.items() if k in ("bottleneck", "bits"))
                out.append(ClaimResult("C1", f"PSNR(plain AE) − PSNR(split-ae) > 0 [{label}]", dataset, i, True,
                                       "dB"))
    return out


def claim_c2(ok: pd.DataFrame) -> list[ClaimResult]:
    """C2 (Schneider et al.): at the same ε, avatar + MaskDP keeps more action accuracy than DP-SGD on the whole
    input; and identity attacks on the anonymised video fall to chance (linker advantage not above 0)."""
    out = []
    for dataset, d in ok.groupby("dataset", sort=True):
        configs = sorted({json.dumps(p, sort_keys=True) for p in _params(_select(d, "maskdp", anonymise="avatar"))})
        for mine in map(json.loads, configs):
            eps = mine.get("target_epsilon")
            if eps is None:
                continue
            ours, theirs = _select(d, "maskdp", **mine), _select(d, "dp-sgd", target_epsilon=eps)
            i = paired_interval(ours, theirs, "utility", binomial=True) if len(ours) and len(theirs) else None
            if i is not None:
                # the privacy unit of the video attacks is the person: say what ε a person has (issue 24)
                person = pd.to_numeric(pd.concat([ours.dp_epsilon_person, theirs.dp_epsilon_person]),
                                       errors="coerce").max() if "dp_epsilon_person" in ours else float("nan")
                unit = f"ε={eps:g}" if pd.isna(person) else f"ε={eps:g} per clip, ≤ {person:.1f} per person"
                out.append(ClaimResult("C2", f"utility(avatar+MaskDP) − utility(DP-SGD) > 0 [{unit}]", dataset,
                                       i, True, "top-1"))
        for params, g in d[d.defense == "avatar"].groupby("defense_params", sort=True):
            link = g[g.threat == "linker"]
            per = [(a, i) for a, h in link.groupby("attack_name", sort=True)
                   if (i := advantage_interval(h, shift=MARGIN)) is not None]
            if per:
                attack, best = max(per, key=lambda x: x[1].mean)
                out.append(ClaimResult("C2", f"re-identification advantage − {MARGIN} < 0 "
                                             f"[{g.config.iloc[0]}; {attack}]", dataset, best, False, "advantage",
                                       _competent(ok, dataset, attack)))
    return out


def claim_c3(ok: pd.DataFrame) -> list[ClaimResult]:
    """C3 (Li et al., VisualMixer): identity (linkage) attacks fail, i.e. the linker's calibrated advantage is
    not above 0; and the accuracy loss is small (paper: about 2.35 pp; tested: drop < 5 pp)."""
    out = []
    for dataset, d in ok[ok.defense == "visualmixer"].groupby("dataset", sort=True):
        for params, g in d.groupby("defense_params", sort=True):
            label = g.config.iloc[0]
            link = g[g.threat == "linker"]
            per = [(a, i) for a, h in link.groupby("attack_name", sort=True)
                   if (i := advantage_interval(h, shift=MARGIN)) is not None]
            if per:
                attack, best = max(per, key=lambda x: x[1].mean)
                out.append(ClaimResult("C3", f"linker advantage − {MARGIN} < 0 [{label}; {attack}]", dataset, best,
                                       False, "advantage", _competent(ok, dataset, attack)))
            out += _drop_claim("C3", g, dataset, label)
    return out


def claim_c4(ok: pd.DataFrame) -> list[ClaimResult]:
    """C4 (Li et al., masking): masknet improves accuracy on masked images over plain retraining (paper: up to
    +9.34 pp), at each masked share."""
    out = []
    for dataset, d in ok[ok.defense == "masking"].groupby("dataset", sort=True):
        rests = sorted({json.dumps({k: v for k, v in p.items() if k != "masknet"}, sort_keys=True)
                        for p in _params(d)})
        for rest in rests:
            other = json.loads(rest)
            on, off = _select(d, "masking", masknet=True, **other), _select(d, "masking", masknet=False, **other)
            i = paired_interval(on, off, "utility", binomial=True) if len(on) and len(off) else None
            if i is not None:
                label = f"masked={other.get('masked')}" + (f", fill={other['fill']}" if "fill" in other else "")
                out.append(ClaimResult("C4", f"utility(masknet) − utility(plain) > 0 [{label}]", dataset,
                                       i, True, "top-1"))
    return out


def claim_c5(ok: pd.DataFrame) -> list[ClaimResult]:
    """C5 (Soufleri et al.): training on the synthetic set is comparable to training on real data (tested: within
    5 pp of `none`), and originals are far from every synthetic image (nearest-neighbour best-match advantage over
    held-out non-members not above 0)."""
    out = []
    for (dataset, _), d in ok[ok.defense == "bn-synthetic"].groupby(["dataset", "defense_params"], sort=True):
        label = d.config.iloc[0]
        out += _drop_claim("C5", d, dataset, label)
        for attack, h in d[d.attack == "nearest-neighbour"].groupby("attack_name", sort=True):
            nn = advantage_interval(h, shift=MARGIN)
            if nn is not None:
                out.append(ClaimResult("C5", f"nearest-synthetic advantage − {MARGIN} < 0 [{label}]", dataset, nn,
                                       False, "advantage", _competent(ok, dataset, attack)))
    return out


CLAIMS: dict[str, Callable[[pd.DataFrame], list[ClaimResult]]] = {
    "C1": claim_c1, "C2": claim_c2, "C3": claim_c3, "C4": claim_c4, "C5": claim_c5}


def evaluate_claims(ok: pd.DataFrame) -> list[ClaimResult]:
    """Every claim the suite's records can test, in claim order."""
    return [r for key in sorted(CLAIMS) for r in CLAIMS[key](ok)]
