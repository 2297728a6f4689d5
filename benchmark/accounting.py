"""ε of a Poisson-subsampled Gaussian mechanism from two valid accountants, RDP and PLD, side by side (issue 24).

DP-SGD's step (clip each sample's gradient to C, sum, add N(0, σ²C²), sample each record with probability q) is a
Poisson-subsampled Gaussian mechanism; ``steps`` of them compose. Both accountants give valid upper bounds on ε at
δ for that composition, under add/remove adjacency:

- **RDP** (Mironov 2017; Mironov, Talwar & Zhang 2019 for the subsampled Gaussian), converted to (ε, δ) with the
  improved conversion of Balle et al. 2020: what Opacus reports;
- **PLD** (privacy loss distributions, Koskela et al. 2020; Doroshenko et al. 2022), with the pessimistic
  discretisation of Google's ``dp-accounting``, so the result stays an upper bound.

PLD is tighter (the quick suite's dp-sgd run: 4.30 against RDP's 4.91 at δ = 1e-5). :func:`poisson_gaussian`
returns both and names the tighter one, which is the record's ε.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError

#: PLD discretisation of the privacy loss (nats): finer is tighter and slower; 1e-4 changes ε by < 1e-5 here.
PLD_INTERVAL = 1e-4


@dataclass(frozen=True)
class Accounting:
    """ε at ``delta`` from each accountant; ``epsilon`` and ``accountant`` are the tighter one's."""

    rdp: float
    pld: float
    delta: float

    @property
    def epsilon(self) -> float:
        return min(self.rdp, self.pld)

    @property
    def accountant(self) -> str:
        return "pld" if self.pld <= self.rdp else "rdp"


def poisson_gaussian(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> Accounting:
    """ε of ``steps`` compositions of the Gaussian mechanism with noise multiplier σ (noise std ÷ sensitivity) on a
    Poisson sample of rate ``sample_rate`` (q in (0, 1]), at ``delta``, from RDP and from PLD."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    if not noise_multiplier > 0 or not 0 < sample_rate <= 1 or steps < 1 or not 0 < delta < 1:
        raise InputError(f"accounting needs σ > 0, 0 < q <= 1, steps >= 1 and 0 < δ < 1; got σ={noise_multiplier}, "
                         f"q={sample_rate}, steps={steps}, δ={delta}")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(event)
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_INTERVAL)
    pld.compose(event)
    out = Accounting(rdp=float(rdp.get_epsilon(delta)), pld=float(pld.get_epsilon(delta)), delta=float(delta))
    if not (math.isfinite(out.rdp) and math.isfinite(out.pld)):
        raise InputError(f"accounting did not converge for σ={noise_multiplier}, q={sample_rate}, steps={steps}")
    return out
