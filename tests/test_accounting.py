"""The accountants behind every recorded ε: RDP agrees with Opacus (what dp-sgd records today), PLD is the tighter
valid bound, and on the one case with a closed form (one Gaussian step, q = 1; Balle & Wang 2018) PLD is an upper
bound within 1% of the exact ε, which RDP overstates."""

from __future__ import annotations

import math

import pytest
from scipy.special import ndtr

from privbench.core.errors import InputError
from privbench.ops.accounting import poisson_gaussian


def _exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    """The exact ε at δ of one Gaussian mechanism of sensitivity 1 and noise σ (analytic Gaussian mechanism)."""
    def d(eps: float) -> float:
        return ndtr(0.5 / sigma - eps * sigma) - math.exp(eps) * ndtr(-0.5 / sigma - eps * sigma)

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if d(mid) > delta else (lo, mid)
    return hi


def test_the_quick_suite_figures_and_opacus_agreement() -> None:
    """dp-sgd on the quick suite: σ = 1, q = 1/16 (1,000 private images, batch 64), 6 epochs, δ = 1e-5: Opacus
    recorded ε = 4.910; PLD gives 4.30."""
    from opacus.accountants import RDPAccountant

    a = poisson_gaussian(1.0, 1 / 16, 96, 1e-5)
    opacus = RDPAccountant()
    opacus.history = [(1.0, 1 / 16, 96)]
    assert a.rdp == pytest.approx(opacus.get_epsilon(1e-5), rel=1e-3) and a.rdp == pytest.approx(4.910, abs=1e-3)
    assert a.pld == pytest.approx(4.299, abs=5e-3)
    assert (a.epsilon, a.accountant) == (a.pld, "pld")


@pytest.mark.parametrize("sigma,q,steps", [(0.8, 0.01, 1000), (1.0, 0.05, 200), (2.0, 0.1, 50), (1.2, 1.0, 10)])
def test_pld_is_never_looser_than_rdp(sigma, q, steps) -> None:
    a = poisson_gaussian(sigma, q, steps, 1e-5)
    assert 0 < a.pld <= a.rdp


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.0, 4.0])
def test_pld_upper_bounds_the_exact_gaussian_epsilon_tightly(sigma) -> None:
    exact = _exact_gaussian_epsilon(sigma, 1e-5)
    a = poisson_gaussian(sigma, 1.0, 1, 1e-5)
    assert exact <= a.pld <= exact * 1.01 + 1e-3, (exact, a.pld)
    assert a.rdp > a.pld  # RDP's conversion is looser on a single step


def test_bad_parameters_name_what_is_wrong() -> None:
    with pytest.raises(InputError, match="σ > 0"):
        poisson_gaussian(0.0, 0.1, 10, 1e-5)


@pytest.mark.parametrize("target,q,steps", [(0.5, 0.032, 500), (1.0, 0.032, 500), (0.05, 0.001, 1000)])
def test_calibration_meets_its_target_with_the_least_noise(target, q, steps) -> None:
    from privbench.ops.accounting import calibrate

    sigma = calibrate(target, q, steps, 1e-5)
    assert poisson_gaussian(sigma, q, steps, 1e-5).epsilon <= target
    assert poisson_gaussian(sigma * 0.995, q, steps, 1e-5).epsilon > target  # no meaningfully smaller σ works


def test_person_level_epsilon_bounds() -> None:
    """A group of one is the sample; the binomial mixture is never looser than the worst component; at q = 1 the
    group of k is one Gaussian of sensitivity k (noise multiplier σ/k), which has a closed form."""
    one = poisson_gaussian(3.0, 0.032, 500, 1e-5, group=1)
    assert one == poisson_gaussian(3.0, 0.032, 500, 1e-5)
    ten = poisson_gaussian(3.0, 0.032, 500, 1e-5, group=10)
    assert one.epsilon < ten.pld <= ten.rdp
    assert ten.pld == pytest.approx(13.36, abs=0.05)  # video-like settings: 10 clips per person
    exact = _exact_gaussian_epsilon(4.0 / 3, 1e-5)
    full = poisson_gaussian(4.0, 1.0, 1, 1e-5, group=3)
    assert exact <= full.pld <= exact * 1.01 + 1e-3
