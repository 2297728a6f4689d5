"""MaskDP: differential privacy for a chosen sensitive region of each sample (Schneider et al., arXiv 2410.17098;
privbench's residual construction, docs/METHODS.md §2 and "MaskDP: the proof").

For a sample ``x`` let ``x_pub`` be ``x`` with its sensitive region replaced by a constant (mid-grey). Each step
samples a Poisson batch (rate ``q``), and the update is

    ( Σ_i g(x_pub,i) + Σ_i clip_C( g(x_i) − g(x_pub,i) ) + N(0, σ²C²I) ) / (q·N)

The public term never reads sensitive content; the residual term has L2 sensitivity ``C`` when one sample's
sensitive content is replaced by the constant ("zero-out" adjacency, the analogue of add/remove) and ``2C`` when
it is replaced by any other content (substitution). The record's ``epsilon`` is Opacus' RDP ε for (σ, q, steps)
under zero-out adjacency. Substitution is two zero-out steps (D -> D with sample j blanked -> D''), so group
privacy gives ``(2ε, (1 + e^ε)·δ)``, recorded as ``epsilon_substitution`` and ``delta_substitution``.

The training-run ε covers the released model (``model``). Each shared update the ``gradients`` surface serves is a
separate release of one full-batch step (q = 1) at the same σ: ``epsilon_per_update`` in the record, and k queries
compose. It says nothing about the non-sensitive region (in the default, the person, whose
gradients pass unprotected), and if anonymised clips are also published, their background is in the clear.

``anonymise: avatar`` first replaces each person by the avatar (:mod:`defenses.avatar`) and makes the background
the sensitive region: the avatar + MaskDP combination of the paper.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.contracts import (GradientMechanism, ImageSet, Modality, Release, ReleaseMeta, RunContext, Splits,
                                 Surface)
from benchmark.errors import InputError
from benchmark.models import input_channels
from benchmark.registry import DEFENSES
from benchmark.seeding import seeded
from benchmark.threats import ThreatModel

from .dp_sgd import DPSGD
from .people import estimator

#: The constant the sensitive region is replaced by in ``x_pub`` (data-independent).
FILL = 0.5


def per_sample_gradients(model: nn.Module, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Cross-entropy gradients of each sample: ``{name: (B, *param.shape)}`` (torch.func vmap over grad)."""
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (x[None],)), y[None])

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, images, labels)


def residual_update(model: nn.Module, images: Tensor, public: Tensor, labels: Tensor, max_grad_norm: float,
                    noise_multiplier: float, generator: torch.Generator, denominator: float) -> dict[str, Tensor]:
    """MaskDP's update of one batch (module docstring): public gradients plus clipped, noised residuals, divided by
    ``denominator`` (the expected batch size ``q·N``). Noise is drawn on the CPU from ``generator``."""
    full = per_sample_gradients(model, images, labels)
    pub = per_sample_gradients(model, public, labels)
    names = list(full)
    residual = {n: full[n] - pub[n] for n in names}
    norms = torch.sqrt(sum(residual[n].flatten(1).pow(2).sum(1) for n in names))
    factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    out = {}
    for n in names:
        clipped = torch.einsum("b,b...->...", factor, residual[n])
        noise = torch.randn(clipped.shape, generator=generator) * (noise_multiplier * max_grad_norm)
        out[n] = (pub[n].sum(0) + clipped + noise.to(clipped.device)) / denominator
    return out


def maskdp_gradients(max_grad_norm: float, noise_multiplier: float) -> GradientMechanism:
    """The shared update of one batch under MaskDP (the oracle passes the blanked batch as ``public``)."""

    def mechanism(model: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator,
                  public: Optional[Tensor] = None) -> tuple[Tensor, ...]:
        if public is None:
            raise InputError("maskdp's shared update needs the blanked batch")
        update = residual_update(model, images, public, labels, max_grad_norm, noise_multiplier, generator,
                                 float(len(images)))
        return tuple(update[n] for n, p in model.named_parameters() if p.requires_grad)

    return mechanism


def blank(clips: Tensor, region: Tensor) -> Tensor:
    """``clips (N,T,C,H,W)`` with ``region (N,T,1,H,W)`` bool set to :data:`FILL`."""
    return torch.where(region.expand_as(clips), torch.full_like(clips, FILL), clips)


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Opacus' RDP ε after ``steps`` Poisson-subsampled Gaussian steps."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta))


def substitution(eps: float, delta: float) -> tuple[float, float]:
    """Group privacy for two zero-out steps: an (ε, δ) guarantee under zero-out adjacency gives (2ε, (1+e^ε)δ)
    when one sample's sensitive content is replaced by any other (Dwork & Roth 2014, Theorem 2.2 generalised)."""
    return 2 * eps, (1 + math.exp(eps)) * delta


@DEFENSES.register("maskdp")
class MaskDP(DPSGD):
    """MaskDP: DP-SGD on the sensitive region's contribution only (residual gradients clipped and noised; the
    blanked sample's gradient added noise-free), optionally after avatar anonymisation."""

    modalities = frozenset({Modality.VIDEO})
    claims = frozenset({ThreatModel.MODEL_HOLDER, ThreatModel.SERVER})
    surfaces = frozenset({Surface.MODEL, Surface.GRADIENTS})
    strength = "noise_multiplier"

    @dataclass(frozen=True)
    class Params(DPSGD.Params):
        sensitive: str = "background"  # or "person"
        anonymise: str = "none"  # or "avatar": train on avatar clips, the background being sensitive
        estimator: str = "ground-truth"

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.sensitive not in ("background", "person"):
                raise InputError(f"sensitive must be 'background' or 'person', got {self.sensitive!r}")
            if self.anonymise not in ("none", "avatar"):
                raise InputError(f"anonymise must be 'none' or 'avatar', got {self.anonymise!r}")
            if self.anonymise == "avatar" and self.sensitive != "background":
                raise InputError("with anonymise: avatar the sensitive region is the background")
            if self.estimator != "ground-truth":
                raise InputError("maskdp needs estimator: ground-truth. An estimator that reads the frame (HOG, "
                                 "MediaPipe) makes the sensitive region depend on the sensitive content, which the "
                                 "guarantee assumes public (docs/METHODS.md, MaskDP)")

    def gradient_mechanism(self, meta: ReleaseMeta) -> GradientMechanism:
        return maskdp_gradients(self.params.max_grad_norm, float(meta.extra["noise_multiplier"]))

    def training_clips(self, private: ImageSet) -> tuple[ImageSet, Tensor]:
        """``(clips trained on, their blanked versions x_pub)``."""
        from .avatar import Avatar

        if self.params.anonymise == "avatar":
            avatar = Avatar(Avatar.Params(estimator=self.params.estimator))
            released, _ = avatar.render(private)
            # x_pub: the same avatars drawn on the constant, so not even an anti-aliased edge reads the background
            public, _ = avatar.render(private, canvas=FILL)
            return ImageSet(released, private.labels), public
        person = estimator(self.params.estimator).estimate(private).masks
        region = ~person if self.params.sensitive == "background" else person
        return ImageSet(private.images, private.labels), blank(private.images, region)

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        from opacus.accountants.utils import get_noise_multiplier

        p, t = self.params, ctx.task
        train, public = self.training_clips(splits.private)
        n = len(train)
        q = min(1.0, t.batch_size / n)
        epochs = p.epochs or t.epochs
        steps = max(1, round(epochs / q))
        sigma = p.noise_multiplier
        if p.target_epsilon is not None:
            sigma = float(get_noise_multiplier(target_epsilon=p.target_epsilon, target_delta=p.delta,
                                               sample_rate=q, steps=steps, accountant="rdp"))
        with seeded(ctx.generator("task-init")):
            model = self.task_model(input_channels(splits.info.shape), splits.info.num_classes, t).to(ctx.device)
        opt = self.optimizer(model.parameters(), p.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        batches, noise = ctx.generator("task-train"), ctx.generator("dp-noise")
        start = time.perf_counter()
        model.train()
        for _ in range(steps):
            idx = torch.nonzero(torch.rand(n, generator=batches) < q).flatten()  # Poisson sampling
            if len(idx) == 0:
                continue
            update = residual_update(model, train.images[idx].to(ctx.device), public[idx].to(ctx.device),
                                     train.labels[idx].to(ctx.device), p.max_grad_norm, sigma, noise, q * n)
            opt.zero_grad(set_to_none=True)
            for name, prm in model.named_parameters():
                if prm.requires_grad:
                    prm.grad = update[name]
            opt.step()
            sched.step()
        seconds = time.perf_counter() - start
        noisy = sigma > 0
        eps = epsilon(sigma, q, steps, p.delta) if noisy else None
        per_update = epsilon(sigma, 1.0, 1, p.delta) if noisy else None  # one shared update (gradients surface)
        sub = substitution(eps, p.delta) if eps is not None else None
        import opacus

        meta = ReleaseMeta(epsilon=eps, delta=p.delta if noisy else None,
                           accountant=f"opacus {opacus.__version__} rdp, zero-out adjacency" if noisy else None,
                           extra={"noise_multiplier": sigma, "dp_epochs": float(epochs), "dp_steps": float(steps),
                                  "sample_rate": q, "seconds_per_epoch": seconds / epochs,
                                  **({"epsilon_substitution": sub[0], "delta_substitution": sub[1],
                                      "epsilon_per_update": per_update} if sub is not None else {})})
        own = None if p.anonymise == "none" else train
        return self.model_release(model.eval(), own, splits, ctx, public=public, meta=meta)

    def release_state(self, release: Release) -> dict[str, Any]:
        state = super().release_state(release)
        assert release.gradients is not None
        state["oracle_train"] = release.gradients.training_set.images
        state["oracle_public"] = release.gradients._public
        return state

    def restore(self, state: Mapping[str, Any], splits: Splits, ctx: RunContext) -> Release:
        model = self.task_model(input_channels(splits.info.shape), splits.info.num_classes, ctx.task)
        model.load_state_dict(state["model"])
        own = None if self.params.anonymise == "none" else ImageSet(state["oracle_train"], splits.private.labels)
        return self.model_release(model.eval(), own, splits, ctx, state["oracle_model"],
                                  public=state["oracle_public"], meta=ReleaseMeta(**state["meta"]))

    def recipe_reference(self) -> Optional["MaskDP.Params"]:
        if self.params.noise_multiplier == 0 and self.params.target_epsilon is None:
            return None
        return dataclasses.replace(self.params, noise_multiplier=0.0, target_epsilon=None)
