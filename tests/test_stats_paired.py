"""Paired accuracy tests, Wilson intervals, Holm correction, TOST and power (issue 29), each checked against an
independent computation (scipy, an exhaustive sum, a bootstrap)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from privbench.core.stats import (
    combine,
    detectable_effect,
    equivalence_p,
    holm,
    mcnemar_p,
    p_value,
    paired_variance,
    unpack_correct,
    wilson,
)
from privbench.report.intervals import paired_interval, utility_interval
from privbench.run.scoring import pack_correct, utility_metrics


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (37, 200), (999, 1000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)
    assert hi > lo  # never a zero-width interval, even at 0 or n


@pytest.mark.parametrize("b,c", [(0, 0), (10, 2), (3, 3), (25, 9), (0, 7)])
def test_mcnemar_matches_an_exhaustive_sum(b: int, c: int) -> None:
    n = b + c
    if n == 0:
        assert mcnemar_p(b, c) == 1.0
        return
    pmf = [math.comb(n, k) / 2 ** n for k in range(n + 1)]
    expected = min(1.0, sum(p for p in pmf if p <= pmf[b] * (1 + 1e-7)))
    assert mcnemar_p(b, c) == pytest.approx(expected, rel=1e-9)


def test_holm_step_down() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running maximum 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9]) == [0.9]
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_p_value_is_the_t_test_when_seeds_dominate() -> None:
    x = np.array([0.021, 0.034, 0.012, 0.027, 0.019, 0.030])
    i = combine(x, np.full(len(x), 1e-12))
    assert p_value(i) == pytest.approx(sps.ttest_1samp(x, 0.0, alternative="greater").pvalue, rel=1e-6)
    assert p_value(i, claimed_positive=False) == pytest.approx(
        sps.ttest_1samp(x, 0.0, alternative="less").pvalue, rel=1e-6)


def test_equivalence_and_power() -> None:
    tight = combine(np.array([0.001, -0.002, 0.0, 0.002, -0.001]), np.full(5, 1e-7))
    assert equivalence_p(tight, 0.02) < 0.01  # a null effect measured precisely is equivalent within 2 pp
    wide = combine(np.array([0.04, 0.05, 0.03, 0.06, 0.05]), np.full(5, 1e-7))
    assert equivalence_p(wide, 0.02) > 0.5  # an effect of 4.6 pp is not
    mde = detectable_effect(tight)
    assert 0 < mde < 0.01


def test_paired_variance_matches_a_bootstrap_over_test_samples() -> None:
    g = np.random.default_rng(0)
    a = g.random(2000) < 0.9
    b = a.copy()
    flip = g.random(2000) < 0.05
    b[flip] = ~b[flip]
    boots = []
    for _ in range(4000):
        idx = g.integers(0, 2000, 2000)
        boots.append(a[idx].mean() - b[idx].mean())
    assert paired_variance(a, b) == pytest.approx(np.var(boots), rel=0.1)
    assert unpack_correct(pack_correct(a), len(a)).tolist() == a.tolist()


class _Prep:
    def __init__(self, right: np.ndarray) -> None:
        self.correct, self.utility = right, float(right.mean())


def _rows(seeds: int, n: int, lost: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a defense that differ only on ``lost`` test samples per seed (the defense gets them wrong)."""
    ref_rows, def_rows = [], []
    for seed in range(seeds):
        ref = np.random.default_rng(seed).random(n) < 0.9
        right = ref.copy()
        right[np.flatnonzero(ref)[:lost]] = False
        m = utility_metrics(_Prep(right), _Prep(ref), n)
        for rows, ans, u in ((ref_rows, ref, ref.mean()), (def_rows, right, right.mean())):
            rows.append({"seed": seed, "utility": float(u), "test_size": n, "test_correct": pack_correct(ans),
                         "drop": m["drop"] if rows is def_rows else 0.0,
                         "drop_var": m["drop_var"] if rows is def_rows else 0.0})
        assert (m["lost"], m["gained"]) == (lost, 0)
    return pd.DataFrame(ref_rows), pd.DataFrame(def_rows)


def test_paired_drop_resolves_what_independent_binomials_cannot() -> None:
    """5 of 1,000 answers lost on every seed: a real 0.5 pp drop. Treated as independent accuracies its CI spans
    ±1.7 pp and includes 0 (the issue's complaint); paired on the same test samples it excludes 0."""
    ref, dfn = _rows(5, 1000, 5)
    paired = utility_interval(dfn, "drop")
    assert paired.mean == pytest.approx(0.005) and paired.lo > 0
    independent = utility_interval(dfn.drop(columns=["drop_var"]).assign(drop_var=np.nan), "drop")
    assert independent.lo < 0 < independent.hi
    diff = paired_interval(ref, dfn, "utility", binomial=True)
    assert diff.mean == pytest.approx(0.005) and diff.lo > 0


def test_all_hits_are_not_certainty() -> None:
    """Issue 29: a seed whose attack hits every target had bootstrap variance 0 (a ± 0.000 interval); its
    within-seed variance is now at least what the Wilson interval of the hit rate gives."""
    from privbench.core.calibration import Units

    units = Units("top1", np.ones(50), np.array([0.1]))
    lo, hi = wilson(50, 50)
    assert units.variance() > 0
    assert math.sqrt(units.variance()) == pytest.approx((hi - lo) / (2 * 1.959964) / 0.9, rel=1e-4)
    mixed = Units("top1", (np.arange(400) % 2).astype(float), np.array([0.1]))
    assert units.variance() != mixed.variance() and mixed.variance() > 0
