"""MaskDP: differential privacy for a chosen sensitive region of each sample (Schneider et al., arXiv 2410.17098;
privbench's residual construction, docs/METHODS.md §2 and "MaskDP: the proof").

For a sample ``x`` let ``x_pub`` be ``x`` with its sensitive region replaced by a constant (mid-grey). Each step
draws two independent Poisson batches at rate ``q``: ``B`` for the residuals and ``P`` for the public term, and
applies

    ( Σ_{i∈P} g(x_pub,i) + Σ_{i∈B} clip_C( g(x_i) − g(x_pub,i) ) + N(0, σ²C²I) ) / (q·N)

**Why two batches.** Under zero-out adjacency (sample j's sensitive region present vs replaced by the constant) the
public term has the same distribution in both worlds and is independent of the rest: it is post-processing of
non-sensitive data. The residual term is exactly a Poisson-subsampled Gaussian mechanism of sensitivity C (j's
residual is 0 when blanked), so DP-SGD's accounting applies unchanged. Adding the public gradients of the *same*
batch ``B`` (this module before issue 24) marks whether j was sampled: the step becomes the mixture pair
``(1−q)·N(0) + q·N(a + r_j)`` vs ``(1−q)·N(0) + q·N(a)`` with an unbounded ``a``, subsampling amplification is
lost, and a recorded ε = 0.5 was worth up to about 3.7 (``tests/dp_controls.py`` keeps it as the audit's positive
control).

Substitution (the sensitive content replaced by any other) is two zero-out steps, so group privacy gives
``(2ε, (1 + e^ε)·δ)``, recorded as ``epsilon_substitution`` and ``delta_substitution``; ε per person (all of one
identity's clips) is recorded as for DP-SGD.

The training-run ε covers the released model (``model``). Each shared update the ``gradients`` surface serves is a
separate release of one given batch (q = 1, nothing sampled, so its public term is that batch's; distinct indices)
at the same σ: ``epsilon_per_update`` in the record, for one sample's sensitive content *replaced* (the batch size
is public there; sensitivity 2C), and k queries compose. It says nothing about the non-sensitive region (in
the default, the person, whose gradients pass unprotected), and if anonymised clips are also published, their
background is in the clear.

``anonymise: avatar`` first replaces each person by the avatar (:mod:`privbench.defenses.avatar`) and makes the background
the sensitive region: the avatar + MaskDP combination of the paper.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import RunContext
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Modality, Splits, Surface
from privbench.core.registry import DEFENSES
from privbench.core.release import GradientMechanism, Release, ReleaseMeta, StepData
from privbench.core.threats import ThreatModel
from privbench.defenses.dp_sgd import (
    DPSGD,
    DPPlan,
    add_noise,
    clipped_sum,
    per_sample_gradients,
    poisson_batch,
    zeros_like_params,
)
from privbench.defenses.people import estimator
from privbench.models import input_channels

#: The constant the sensitive region is replaced by in ``x_pub`` (data-independent).
FILL = 0.5


def residual_sum(model: nn.Module, images: Tensor, public: Tensor, labels: Tensor,
                 max_grad_norm: float) -> dict[str, Tensor]:
    """``Σ_i clip_C(g(x_i) − g(x_pub,i))`` over a batch (each sample's residual clipped over all parameters)."""
    full = per_sample_gradients(model, images, labels)
    pub = per_sample_gradients(model, public, labels)
    return clipped_sum({n: full[n] - pub[n] for n in full}, max_grad_norm)


def public_sum(model: nn.Module, public: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """``Σ_i g(x_pub,i)``: the summed gradient of the blanked samples (one ordinary backward pass)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(model(public), labels, reduction="sum"), params)
    return dict(zip(names, grads))


def residual_update(model: nn.Module, images: Tensor, public: Tensor, labels: Tensor, max_grad_norm: float,
                    noise_multiplier: float, generator: torch.Generator, denominator: float) -> dict[str, Tensor]:
    """The update of one *given* batch (the ``gradients`` surface, q = 1): its public gradients plus its clipped,
    noised residuals, divided by ``denominator``. Noise is drawn on the CPU from ``generator``."""
    total = residual_sum(model, images, public, labels, max_grad_norm)
    noised = add_noise(total, noise_multiplier * max_grad_norm, generator, denominator)
    pub = public_sum(model, public, labels)
    return {n: v + pub[n].detach() / denominator for n, v in zip(total, noised)}


@dataclass(frozen=True)
class MaskDPStep:
    """One MaskDP training step (module docstring; :class:`privbench.core.release.TrainingStep`): residuals of a
    Poisson batch clipped and noised, plus the public gradients of an independent Poisson batch. ``denominator``:
    the expected batch size ``q·N``."""

    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    denominator: float
    adjacency = "zero-out of one sample's sensitive region"

    def __call__(self, model: nn.Module, data: StepData, sampling: torch.Generator,
                 noise: torch.Generator) -> tuple[Tensor, ...]:
        if data.public is None:
            raise InputError("a MaskDP step needs the blanked samples (StepData.public)")
        private = data.take(poisson_batch(len(data), self.sample_rate, sampling))
        shown = data.take(poisson_batch(len(data), self.sample_rate, sampling))  # independent of `private`
        dev = next(model.parameters()).device
        total = (residual_sum(model, private.images.to(dev), private.public.to(dev), private.labels.to(dev),
                              self.max_grad_norm) if len(private) else zeros_like_params(model))
        noised = add_noise(total, self.noise_multiplier * self.max_grad_norm, noise, self.denominator)
        if not len(shown):
            return noised
        pub = public_sum(model, shown.public.to(dev), shown.labels.to(dev))
        return tuple(v + pub[n].detach() / self.denominator for n, v in zip(total, noised))

    def neighbour(self, data: StepData, changed: Tensor) -> StepData:
        """Zero-out adjacency: the samples ``changed`` with their sensitive region blanked (``x := x_pub``)."""
        if data.public is None:
            raise InputError("a MaskDP step needs the blanked samples (StepData.public)")
        keep = changed.reshape((-1,) + (1,) * (data.images.ndim - 1))
        return StepData(torch.where(keep, data.public, data.images), data.labels, data.public)


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
    blank_fill = FILL  # the DP audits' canaries get a blanked view of this constant

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
        from privbench.defenses.avatar import Avatar

        if self.params.anonymise == "avatar":
            avatar = Avatar(Avatar.Params(estimator=self.params.estimator))
            released, _ = avatar.render(private)
            # x_pub: the same avatars drawn on the constant, so not even an anti-aliased edge reads the background
            public, _ = avatar.render(private, canvas=FILL)
            return ImageSet(released, private.labels), public
        person = estimator(self.params.estimator).estimate(private).masks
        region = ~person if self.params.sensitive == "background" else person
        return ImageSet(private.images, private.labels), blank(private.images, region)

    def training_step(self, plan: DPPlan, n: int) -> MaskDPStep:
        return MaskDPStep(plan.sample_rate, plan.noise_multiplier, self.params.max_grad_norm, plan.sample_rate * n)

    def training_data(self, splits: Splits) -> tuple[StepData, Optional[ImageSet]]:
        train, public = self.training_clips(splits.private)
        own = None if self.params.anonymise == "none" else train
        return StepData(train.images, train.labels, public), own

    def scheduler(self, opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)

    def dp_meta(self, plan: DPPlan, step, seconds: float) -> ReleaseMeta:
        """DP-SGD's numbers (the residual term is its mechanism) plus substitution adjacency by group privacy."""
        meta = super().dp_meta(plan, step, seconds)
        if meta.epsilon is None or meta.delta is None:
            return meta
        eps, delta = substitution(meta.epsilon, meta.delta)
        return dataclasses.replace(meta, extra={**meta.extra, "epsilon_substitution": eps,
                                                "delta_substitution": delta})

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
