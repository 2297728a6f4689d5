"""Confidence intervals over seeds (docs/METHODS.md, Statistics).

Every table number is a mean over seeds with a 95% CI that combines two sources of uncertainty:

- **within a seed**: the sampling variance ``v_s`` of the seed's estimate, from a bootstrap over its targets (or
  membership candidates; :mod:`privbench.core.calibration`), or the binomial variance ``p(1-p)/n`` of a test accuracy
  (what a bootstrap over the test samples converges to);
- **across seeds**: the sample variance ``s²`` of the per-seed estimates, which also moves with the split, the
  initialisation and the defense's secrets (a seed changes all of them).

The variance of the mean over ``S`` seeds is taken as ``max(mean(v_s), s²) / S`` (a method-of-moments random-effects
estimate: ``s²`` already contains the within-seed noise, so the between-seed component is ``max(0, s² - mean(v))``),
and the interval is Student's t with ``S - 1`` degrees of freedom. With one seed only the within-seed part is known:
the normal interval on it, which is ``[m, m]`` when every unit agrees (an attack that scores 1.0 on every target
has within-seed variance 0), and unbounded when the within-seed variance is unknown (passed as NaN, e.g. a cost or a
prior). One seed decides no verdict (:func:`verdict`); rows show their seed count.

Paired comparisons (defense A vs defense B) use the per-seed differences on the same seeds, with within-seed
variances from a paired bootstrap over the shared targets.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """``mean`` with its CI ``[lo, hi]`` over ``seeds`` seeds."""

    mean: float
    lo: float
    hi: float
    seeds: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and self.lo <= self.mean + 1e-12 and self.mean <= self.hi + 1e-12):
            raise ValueError(f"estimate {self.mean} outside its CI [{self.lo}, {self.hi}]")

    @property
    def half_width(self) -> float:
        return max(self.hi - self.mean, self.mean - self.lo)

    def excludes_zero(self) -> bool:
        return self.lo > 0.0 or self.hi < 0.0

    def to_json(self) -> dict[str, Any]:
        """``{"mean", "lo", "hi", "seeds"}``, JSON-safe: an unbounded side (one seed without within-seed variance,
        a one-sided bound) is ``None``. The one interval format of ``submission.json`` and the leaderboard."""
        return {"mean": self.mean, "lo": self.lo if math.isfinite(self.lo) else None,
                "hi": self.hi if math.isfinite(self.hi) else None, "seeds": self.seeds}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Interval":
        """The inverse of :meth:`to_json` (``None`` sides are unbounded; a missing ``seeds`` is 0)."""
        return cls(float(d["mean"]), -math.inf if d.get("lo") is None else float(d["lo"]),
                   math.inf if d.get("hi") is None else float(d["hi"]), int(d.get("seeds") or 0))


@functools.lru_cache(maxsize=None)
def _quantile(level: float, df: int) -> float:
    """Two-sided ``level`` quantile: Student's t with ``df`` degrees of freedom, the normal for ``df = 0``."""
    from scipy.special import ndtri, stdtrit  # scipy.stats' t.ppf and norm.ppf, without its 0.5 s import

    q = 0.5 + level / 2
    return float(ndtri(q) if df == 0 else stdtrit(df, q))


def combine(estimates: Sequence[float], variances: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of per-seed ``estimates`` with the CI described in the module docstring."""
    x = np.asarray(estimates, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    if len(x) == 0 or len(x) != len(v):
        raise ValueError(f"{len(x)} estimates and {len(v)} variances")
    known = ~np.isnan(v)
    if not (np.isfinite(x).all() and np.isfinite(v[known]).all() and (v[known] >= 0).all()):
        raise ValueError("estimates must be finite and variances finite and >= 0 (NaN: unknown)")
    s = len(x)
    mean = float(x.mean())
    if s == 1:  # only the within-seed part: known (0 when every unit agrees) or unknown (unbounded)
        half = _quantile(level, 0) * math.sqrt(v[0]) if known[0] else math.inf
    else:
        var = max(float(v[known].mean()) if known.any() else 0.0, float(x.var(ddof=1))) / s
        half = _quantile(level, s - 1) * math.sqrt(var)
    return Interval(mean, mean - half, mean + half, s)


def binomial_variance(p: float, n: int) -> float:
    """Sampling variance of an accuracy ``p`` measured on ``n`` samples."""
    if n <= 0:
        raise ValueError("n must be positive")
    return p * (1.0 - p) / n


def proportion_variance(p: float, n: int) -> float:
    """Sampling variance of a proportion ``p`` measured on ``n`` trials, at least what its Wilson interval implies
    (so ``p = 0`` or ``1`` is not certainty: a TPR of 0 on 500 members is not ``± 0.000``)."""
    return max(binomial_variance(p, n), wilson_variance(min(max(int(round(p * n)), 0), n), n))


def wilson_variance(successes: int, n: int) -> float:
    """The variance a 95% Wilson interval of ``successes / n`` implies: ``(half-width / z)²``."""
    lo, hi = wilson(successes, n)
    return ((hi - lo) / (2 * _quantile(LEVEL, 0))) ** 2


def verdict(difference: Interval, claimed_positive: bool = True) -> str:
    """``confirmed`` / ``refuted`` when the CI of the claimed difference excludes 0, else ``inconclusive``.

    ``claimed_positive``: the claim says the difference is > 0 (otherwise < 0).
    """
    if difference.seeds < 2:
        return "inconclusive (one seed decides no verdict)"
    if not difference.excludes_zero():
        return "inconclusive"
    return "confirmed" if (difference.lo > 0) == claimed_positive else "refuted"


def unpack_correct(hex_bits: str, n: int) -> np.ndarray:
    """The ``(n,)`` bool vector a record stores as hex of its packed bits (``privbench.run.scoring.pack_correct``)."""
    raw = np.frombuffer(bytes.fromhex(hex_bits), dtype=np.uint8)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"{len(raw)} bytes of answers for {n} test samples")
    return np.unpackbits(raw)[:n].astype(bool)


def paired_variance(a: np.ndarray, b: np.ndarray) -> float:
    """Sampling variance of ``mean(a) − mean(b)`` for two models' answers ``(n,)`` bool on the same test samples
    (the variance of the mean of the per-sample differences; what a paired bootstrap converges to)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.var() / len(d))


def mcnemar_p(lost: int, gained: int) -> float:
    """Exact two-sided McNemar p-value for ``lost`` and ``gained`` discordant pairs (binomial test at 1/2)."""
    from scipy.stats import binomtest

    n = lost + gained
    return 1.0 if n == 0 else float(binomtest(lost, n, 0.5).pvalue)


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``: never ``[p, p]`` at 0 or 1 (unlike ``p ± z·se``)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson: {successes} of {n}")
    z = _quantile(level, 0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def standard_error(i: Interval, level: float = LEVEL) -> float:
    """The standard error an interval of :func:`combine` was built from (its half-width over the quantile)."""
    q = _quantile(level, max(0, i.seeds - 1))
    return i.half_width / q if math.isfinite(i.half_width) else math.inf


def p_value(i: Interval, claimed_positive: bool = True, level: float = LEVEL) -> float:
    """One-sided p-value of ``mean ≤ 0`` (``claimed_positive``) or ``mean ≥ 0`` against the claim, from the
    t statistic behind :func:`combine`'s interval (``S − 1`` degrees of freedom; normal for one seed)."""
    from scipy.special import ndtr, stdtr

    se = standard_error(i, level)
    if not math.isfinite(se):
        return 1.0
    if se == 0:
        return 0.0 if (i.mean > 0) == claimed_positive and i.mean != 0 else 1.0
    t = i.mean / se if claimed_positive else -i.mean / se
    df = max(0, i.seeds - 1)
    return float(1 - (ndtr(t) if df == 0 else stdtr(df, t)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down; family-wise error over the sequence)."""
    order = np.argsort(p_values)
    m = len(p_values)
    out = np.zeros(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[idx])))
        out[idx] = running
    return out.tolist()


def equivalence_p(i: Interval, margin: float, level: float = LEVEL) -> float:
    """TOST p-value that ``|mean| < margin`` (two one-sided tests; the larger of the two p-values): equivalence is
    shown at level α when it is below α, i.e. when the (1 − 2α) interval lies inside ``(−margin, margin)``."""
    lower = p_value(Interval(i.mean + margin, i.lo + margin, i.hi + margin, i.seeds), True, level)
    upper = p_value(Interval(i.mean - margin, i.lo - margin, i.hi - margin, i.seeds), False, level)
    return max(lower, upper)


def detectable_effect(i: Interval, power: float = 0.8, alpha: float = 0.05, level: float = LEVEL) -> float:
    """The smallest true effect this design detects with probability ``power`` in a one-sided test at ``alpha``:
    ``(t_{1−α} + t_{power}) · se`` with the interval's standard error and degrees of freedom."""
    se = standard_error(i, level)
    df = max(0, i.seeds - 1)
    return (_quantile(1 - 2 * alpha, df) + _quantile(2 * power - 1, df)) * se
