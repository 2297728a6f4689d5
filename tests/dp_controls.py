"""Test-only DP mechanisms that are wrong on purpose: the positive controls the DP audits must catch.

- :class:`SameBatchMaskDPStep`: MaskDP as privbench had it before issue 24, the public gradients taken over the
  *same* Poisson batch as the residuals. Sample j's public term marks whether j was sampled, so subsampling
  amplification is lost while the accountant still claims it.
- :class:`UnclippedDPSGDStep`: DP-SGD that forgets to clip: a sample's contribution is unbounded while the accountant
  assumes C.
- :class:`RewoundNoiseDPSGDStep`: DP-SGD that reseeds its noise generator at every step (as a training loop that
  creates ``ctx.generator("dp-noise")`` inside the loop would): every step adds the same noise, which differencing
  removes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from privbench.core.release import StepData
from privbench.defenses.dp_sgd import DPSGDStep, add_noise, per_sample_gradients, poisson_batch, zeros_like_params
from privbench.defenses.maskdp import MaskDPStep, public_sum, residual_sum


@dataclass(frozen=True)
class SameBatchMaskDPStep(MaskDPStep):
    """The flawed MaskDP step: ``(Σ_{i∈B} g(x_pub,i) + Σ_{i∈B} clip(r_i) + noise) / (q·N)``, one batch ``B``."""

    def __call__(self, model: nn.Module, data: StepData, sampling: torch.Generator,
                 noise: torch.Generator) -> tuple[Tensor, ...]:
        batch = data.take(poisson_batch(len(data), self.sample_rate, sampling))
        if not len(batch):
            return add_noise(zeros_like_params(model), self.noise_multiplier * self.max_grad_norm, noise,
                             self.denominator)
        total = residual_sum(model, batch.images, batch.public, batch.labels, self.max_grad_norm)
        noised = add_noise(total, self.noise_multiplier * self.max_grad_norm, noise, self.denominator)
        pub = public_sum(model, batch.public, batch.labels)
        return tuple(v + pub[n].detach() / self.denominator for n, v in zip(total, noised))


@dataclass(frozen=True)
class UnclippedDPSGDStep(DPSGDStep):
    """DP-SGD without clipping: the raw per-sample gradients summed and noised as if their norm were C."""

    def __call__(self, model: nn.Module, data: StepData, sampling: torch.Generator,
                 noise: torch.Generator) -> tuple[Tensor, ...]:
        batch = data.take(poisson_batch(len(data), self.sample_rate, sampling))
        total = ({n: g.sum(0) for n, g in per_sample_gradients(model, batch.images, batch.labels).items()}
                 if len(batch) else zeros_like_params(model))
        return add_noise(total, self.noise_multiplier * self.max_grad_norm, noise, self.denominator)


@dataclass(frozen=True)
class RewoundNoiseDPSGDStep(DPSGDStep):
    """DP-SGD whose noise generator is rewound to one fixed state before every step."""

    def __call__(self, model: nn.Module, data: StepData, sampling: torch.Generator,
                 noise: torch.Generator) -> tuple[Tensor, ...]:
        return super().__call__(model, data, sampling, torch.Generator().manual_seed(1234))
