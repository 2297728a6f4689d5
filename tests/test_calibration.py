"""Calibrated advantage and confidence intervals: the zero point, the identity release, the bootstrap against an
independent implementation, and the seed combination's coverage."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from privbench.core.calibration import Units, advantage, paired_difference_variance
from privbench.core.stats import combine, verdict


def test_advantage_zero_point_and_identity() -> None:
    rng = np.random.default_rng(0)
    prior = rng.uniform(0.1, 0.3, 500)
    assert Units("ssim", prior.copy(), prior).estimate()[2] == pytest.approx(0.0)
    assert Units("ssim", np.ones(500), prior).estimate()[2] == pytest.approx(1.0)
    # below the prior is a negative advantage (a failed attack), never privacy
    assert Units("ssim", prior - 0.05, prior).estimate()[2] < 0
    assert advantage(0.5, 1.0) == 0.0  # nothing left to leak


def test_linkage_at_chance_has_zero_advantage_and_a_ci_covering_it() -> None:
    rng = np.random.default_rng(1)
    g = 100
    hits = (rng.integers(0, g, 2000) == 0).astype(float)  # a blind guess in a gallery of 100
    u = Units("top1", hits, np.array([1 / g]))
    raw, prior, adv = u.estimate()
    se = np.sqrt(u.variance())
    assert abs(adv) < 3 * se and se == pytest.approx(np.sqrt(0.01 * 0.99 / 2000) / 0.99, rel=0.15)


def test_auc_units_agree_with_sklearn_and_bootstrap_with_the_delong_scale() -> None:
    rng = np.random.default_rng(2)
    labels = rng.random(1000) < 0.5
    scores = rng.normal(size=1000) + 0.8 * labels
    u = Units("auc", scores, np.array([0.5]), labels=labels)
    raw, prior, adv = u.estimate()
    auc = roc_auc_score(labels, scores)
    assert raw == pytest.approx(auc) and adv == pytest.approx(2 * (auc - 0.5))
    # Hanley–McNeil standard error of an AUC, as an independent check of the stratified bootstrap
    m, n = labels.sum(), (~labels).sum()
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    se_auc = np.sqrt((auc * (1 - auc) + (m - 1) * (q1 - auc ** 2) + (n - 1) * (q2 - auc ** 2)) / (m * n))
    assert np.sqrt(u.variance()) == pytest.approx(2 * se_auc, rel=0.2)


def test_units_round_trip_and_reject_bad_input() -> None:
    u = Units("auc", np.array([0.1, 0.9, 0.4]), np.array([0.5]), labels=np.array([False, True, True]))
    back = Units.from_arrays({k: np.asarray(v) for k, v in u.arrays().items()})
    assert back.statistic == "auc" and back.estimate() == pytest.approx(u.estimate())
    with pytest.raises(ValueError, match="statistic"):
        Units("psnr", np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        Units("ssim", np.array([np.nan]), np.array([0.1]))
    with pytest.raises(ValueError, match="members and non-members"):
        Units("auc", np.ones(3), np.array([0.5]), labels=np.ones(3, bool))


def test_paired_bootstrap_cancels_shared_target_difficulty() -> None:
    rng = np.random.default_rng(3)
    difficulty = rng.uniform(0, 1, 400)  # shared by both defenses on the same targets
    prior = np.full(400, 0.1)
    a = Units("ssim", np.clip(difficulty + 0.05, 0, 1), prior)
    b = Units("ssim", difficulty, prior)
    assert paired_difference_variance(a, b) < 0.05 * (a.variance() + b.variance())


def test_seed_combination_covers_the_truth_at_the_nominal_rate() -> None:
    """Simulated seeds (between-seed spread 0.05, within-seed SE 0.02): the 95% CI covers the true mean in about
    95% of 2,000 repetitions, and a 1-seed interval is the within-seed one."""
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(2000):
        true_seed = 0.3 + rng.normal(0, 0.05, 5)
        est = true_seed + rng.normal(0, 0.02, 5)
        covered += combine(est, np.full(5, 0.02 ** 2)).lo <= 0.3 <= combine(est, np.full(5, 0.02 ** 2)).hi
    assert 0.92 <= covered / 2000 <= 0.98
    one = combine([0.4], [0.01 ** 2])
    assert one.hi - one.mean == pytest.approx(1.959964 * 0.01) and one.seeds == 1


def test_verdicts_need_the_ci_to_exclude_zero() -> None:
    assert verdict(combine([0.2, 0.25, 0.22, 0.21, 0.23], [1e-4] * 5)) == "confirmed"
    assert verdict(combine([-0.2, -0.25, -0.22, -0.21, -0.23], [1e-4] * 5)) == "refuted"
    assert verdict(combine([0.2, -0.25, 0.22, -0.21, 0.03], [1e-4] * 5)) == "inconclusive"
    with pytest.raises(ValueError):
        combine([], [])


def test_seed_interval_uses_students_t_and_the_normal_for_one_seed() -> None:
    """The interval's quantiles (scipy.special) agree with scipy.stats' t and normal distributions."""
    from scipy.stats import norm, t

    x, v = [0.1, 0.3, 0.2, 0.5], [0.001, 0.002, 0.001, 0.004]
    i = combine(x, v)
    half = t.ppf(0.975, 3) * np.sqrt(max(np.mean(v), np.var(x, ddof=1)) / 4)
    assert i.hi - i.mean == pytest.approx(half, rel=1e-12)
    one = combine([0.4], [0.01])
    assert one.hi - one.mean == pytest.approx(norm.ppf(0.975) * 0.1, rel=1e-12)
    # issue 25: one seed on which every unit agrees (an attack scoring 1.0 on every target) is [1, 1], not
    # [-inf, inf]; only an unknown within-seed variance (NaN) leaves one seed's interval unbounded
    exact = combine([1.0], [0.0])
    assert (exact.lo, exact.mean, exact.hi) == (1.0, 1.0, 1.0)
    assert combine([0.4], [np.nan]).hi == np.inf
    assert combine([0.4, 0.5], [np.nan, np.nan]).hi < np.inf  # several seeds: the spread across them
    # ... and one seed decides no verdict, however narrow its interval
    assert verdict(combine([0.3], [1e-6])) == "inconclusive (one seed decides no verdict)"
