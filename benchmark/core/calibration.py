"""Calibrated leakage (docs/METHODS.md, Calibrated leakage): every privacy score against its no-release prior.

An attack's raw score means nothing without the score of the best guess an attacker makes *without* the release
(the prior). The calibrated advantage is

    advantage = (score - prior) / (ideal - prior)

with ``ideal = 1`` (SSIM, hit rate, AUC): ≈ 0 for a release that carries no information about the targets, 1 for
the identity release, negative for an attack that does worse than the prior (a failed attack, never privacy).

Priors, per statistic:

- ``ssim``: reconstructions aligned with their originals; prior = SSIM of the aux mean image (release-independent,
  what a decoder trained on an uninformative release converges to under MSE) with each original;
- ``best-match-ssim``: outputs scored against the closest private image of a class (GAN prototypes, reconstructions
  of synthetic training data); prior = the same best-match statistic against as many held-out non-member images of
  that class (a control: best-of-many matching inflates with the number of candidates);
- ``top1``: linkage hits; prior = chance ``1/G`` for a gallery of ``G`` originals;
- ``auc``: membership scores; prior = 0.5.

:class:`Units` holds a cell's per-unit evidence (one unit per target, or per membership candidate), from which the
advantage and its within-seed sampling variance (bootstrap over units) are computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

#: Bootstrap replicates for within-seed variances (fixed generator: records are reproducible).
BOOTSTRAP = 400
STATISTICS = ("ssim", "best-match-ssim", "top1", "auc")


@dataclass(frozen=True)
class Units:
    """One cell's per-unit evidence.

    ``score (n,)``: per-unit score (SSIM, hit 0/1, or membership score). ``prior (n,)``: per-unit prior, or
    ``(1,)`` for a constant prior. ``labels (n,)`` bool: membership truth (``auc`` only).
    """

    statistic: str
    score: np.ndarray
    prior: np.ndarray
    labels: Optional[np.ndarray] = None
    ideal: float = 1.0

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {self.statistic!r}; expected one of {STATISTICS}")
        n = len(self.score)
        if n == 0 or self.score.ndim != 1 or self.prior.ndim != 1 or len(self.prior) == 0:
            raise ValueError(f"units: score {self.score.shape} and prior {self.prior.shape} must be non-empty 1-D")
        if not (np.isfinite(self.score).all() and np.isfinite(self.prior).all()):
            raise ValueError("units: non-finite scores")
        if (self.statistic == "auc") != (self.labels is not None):
            raise ValueError("units: labels are given exactly for the auc statistic")
        if self.labels is not None and (self.labels.all() or not self.labels.any()):
            raise ValueError("units: membership needs members and non-members")

    def __len__(self) -> int:
        return len(self.score)

    def estimate(self) -> tuple[float, float, float]:
        """``(raw score, prior, advantage)``."""
        if self.statistic == "auc":
            raw = float(_auc(self.score[None], self.labels[None])[0])
            prior = float(self.prior.mean())
        else:
            raw, prior = float(self.score.mean()), float(self.prior.mean())
        return raw, prior, advantage(raw, prior, self.ideal)

    def replicates(self, rng: np.random.Generator, b: int = BOOTSTRAP, idx: Optional[np.ndarray] = None
                   ) -> np.ndarray:
        """``(b,)`` bootstrap replicates of the advantage, resampling units (stratified by membership for
        ``auc``). ``idx (b, n)``: resampling indices to use (paired comparisons share them)."""
        if idx is None:
            idx = self.resample(rng, b)
        if self.statistic == "auc":
            raw = _auc(self.score[idx], self.labels[idx])
            prior = np.full(len(idx), float(self.prior.mean()))
        else:
            raw = self.score[idx].mean(1)
            m = len(self.prior)
            if m == len(self):
                prior = self.prior[idx].mean(1)
            elif m == 1:
                prior = np.full(len(idx), float(self.prior[0]))
            else:
                prior = self.prior[rng.integers(0, m, size=(len(idx), m))].mean(1)
        return advantage(raw, prior, self.ideal)

    def resample(self, rng: np.random.Generator, b: int = BOOTSTRAP) -> np.ndarray:
        """``(b, n)`` bootstrap indices (members and non-members resampled separately for ``auc``)."""
        n = len(self)
        if self.labels is None:
            return rng.integers(0, n, size=(b, n))
        pos, neg = np.flatnonzero(self.labels), np.flatnonzero(~self.labels)
        return np.concatenate([pos[rng.integers(0, len(pos), size=(b, len(pos)))],
                               neg[rng.integers(0, len(neg), size=(b, len(neg)))]], axis=1)

    def variance(self, seed: int = 0) -> float:
        """Within-seed sampling variance of the advantage (bootstrap over units). For 0/1 units (hits) it is at
        least the variance a Wilson interval of the hit rate implies: a seed on which every target is hit (or
        missed) has bootstrap variance 0, which is not certainty about the rate (``± 0.000`` on the boards)."""
        v = float(np.var(self.replicates(np.random.default_rng(seed)), ddof=1))
        if self.statistic != "auc" and np.isin(self.score, (0.0, 1.0)).all():
            from privbench.core.stats import wilson_variance

            gap = self.ideal - float(self.prior.mean())
            if abs(gap) > 1e-12:
                v = max(v, wilson_variance(int(self.score.sum()), len(self.score)) / gap ** 2)
        return v

    def arrays(self) -> dict[str, np.ndarray]:
        """The units as plain arrays (stored in the cell's ``units`` artifact)."""
        out = {"score": self.score.astype(np.float32), "prior": self.prior.astype(np.float32),
               "statistic": np.array(self.statistic), "ideal": np.array(self.ideal)}
        if self.labels is not None:
            out["labels"] = self.labels.astype(bool)
        return out

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray]) -> "Units":
        labels = arrays.get("labels")
        return Units(str(arrays["statistic"]), np.asarray(arrays["score"], dtype=np.float64),
                     np.asarray(arrays["prior"], dtype=np.float64),
                     None if labels is None else np.asarray(labels, dtype=bool), float(arrays["ideal"]))


def advantage(raw, prior, ideal: float = 1.0):
    """``(raw - prior) / (ideal - prior)``; 0 when the prior is already ideal (nothing left to leak)."""
    gap = np.asarray(ideal - np.asarray(prior, dtype=np.float64))
    safe = np.where(np.abs(gap) < 1e-12, 1.0, gap)
    out = np.where(np.abs(gap) < 1e-12, 0.0, (np.asarray(raw, dtype=np.float64) - prior) / safe)
    return float(out) if out.ndim == 0 else out


def _auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC (Mann–Whitney, ties count 1/2): ``scores, labels (b, m)`` -> ``(b,)``."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    pos = labels.sum(1)
    neg = labels.shape[1] - pos
    return ((ranks * labels).sum(1) - pos * (pos + 1) / 2) / (pos * neg)


def paired_difference_variance(a: Units, b: Units, seed: int = 0) -> float:
    """Within-seed variance of ``advantage(a) - advantage(b)`` for two cells scored on the same units (same seed,
    same targets or candidates): both are resampled with the same indices, so shared target difficulty cancels.
    Falls back to the sum of variances when the units do not line up."""
    rng = np.random.default_rng(seed)
    if len(a) != len(b) or a.statistic != b.statistic or (a.labels is not None and
                                                           not np.array_equal(a.labels, b.labels)):
        return a.variance(seed) + b.variance(seed + 1)
    idx = a.resample(rng)
    return float(np.var(a.replicates(rng, idx=idx) - b.replicates(rng, idx=idx), ddof=1))
