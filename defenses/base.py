"""Shared bases: input-side defenses (one public per-image transform at training and inference) and defenses that
train and release a task model (``model`` + ``gradients`` surfaces)."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import Defense, RunContext
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Modality, Splits, Surface, check_images
from privbench.core.release import GradientMechanism, GradientOracle, Release, ReleaseMeta
from privbench.core.seeding import seeded
from privbench.models import input_channels

#: How far outside [0, 1] a release may stray by rounding before it counts as out of range.
RANGE_TOLERANCE = 1e-4


class InputDefense(Defense):
    """A defense that releases ``transform(private)`` and applies the same public transform at inference.

    Subclasses implement :meth:`apply` on ``(N,C,H,W)`` images in [0,1] with a seeded generator for the secret
    randomness. Surfaces: ``data`` and ``transform``.
    """

    surfaces: ClassVar[frozenset[Surface]] = frozenset({Surface.DATA, Surface.TRANSFORM})

    #: Clipping to [0, 1] is part of the defense (additive noise): values outside are clipped. Otherwise a release
    #: outside [0, 1] (beyond rounding) is a bug, e.g. pixels in 0..255, and is refused instead of clamped.
    clip_output: ClassVar[bool] = False

    @abstractmethod
    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The defense on ``(N,C,H,W)`` images in [0,1]: the same shape, floating point, in [0, 1] (or any real
        values when ``clip_output``, clipped after)."""

    def transform(self, images: Tensor | ImageSet, generator: torch.Generator) -> Tensor:
        if isinstance(images, ImageSet):  # annotated clips: a per-sample transform needs only the pixels
            images = images.images
        check_images(images, f"{self.id} input")
        reason = self.handles(Modality.of(tuple(images.shape[1:])))
        if reason:  # e.g. an attacker sending clips to an image-only transform
            raise InputError(f"{self.id} input: {reason}")
        out = self.apply(images, generator)
        if not isinstance(out, Tensor) or out.shape != images.shape or not out.is_floating_point():
            raise InputError(f"{self.id}: apply must return a float tensor of the input's shape "
                             f"{tuple(images.shape)}, got {type(out).__name__} "
                             f"{tuple(getattr(out, 'shape', ()))} {getattr(out, 'dtype', '')}")
        if not self.clip_output and out.numel():
            lo, hi = float(out.min()), float(out.max())
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
                raise InputError(f"{self.id}: released values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}] (pixels "
                                 "in 0..255? rescale them); set clip_output = True only if clipping is part of the "
                                 "defense, as for additive noise")
        return out.clamp_(0.0, 1.0)  # rounding only, unless clipping is the defense's

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        released = self.transform(splits.private.images, ctx.generator("release"))
        return Release(data=ImageSet(released, splits.private.labels.clone()), transform=self.transform,
                       inference_transform=self.transform, meta=ReleaseMeta())


def cross_entropy_gradients(model: nn.Module, images: Tensor, labels: Tensor,
                            generator: torch.Generator) -> tuple[Tensor, ...]:
    """The plain shared update: gradients of the mean cross-entropy of ``model`` on the batch (no privacy)."""
    loss = F.cross_entropy(model(images), labels)
    return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])


class ModelReleaser(Defense):
    """A defense that trains a task model, releases it (``model``) and exposes the shared update (``gradients``).

    The gradient oracle's model is the freshly initialised task model (seeded; eval mode, so BatchNorm uses its
    running statistics): the first round of federated training, where gradient inversion is strongest
    (**assumption**, as in DLG and Inverting Gradients). Subclasses set :meth:`gradient_mechanism` (e.g. DP-SGD's
    clipped, noised update) and call :meth:`model_release`.
    """

    def gradient_mechanism(self, meta: ReleaseMeta) -> GradientMechanism:
        """The shared update's mechanism (default: plain gradients); ``meta`` is the release's metadata."""
        return cross_entropy_gradients

    def _fresh(self, splits: Splits, ctx: RunContext) -> nn.Module:
        with seeded(ctx.generator("global-model-init")):
            return self.task_model(input_channels(splits.info.shape), splits.info.num_classes, ctx.task).eval()

    def model_release(self, model: nn.Module, train: Optional[ImageSet], splits: Splits, ctx: RunContext,
                      oracle_state: Optional[Mapping[str, Tensor]] = None, public: Optional[Tensor] = None,
                      **fields: Any) -> Release:
        """A release exposing ``model`` and a gradient oracle on ``train`` (``None`` = the private split);
        ``public``: the training samples with their sensitive region blanked (MaskDP's mechanism)."""
        fresh = self._fresh(splits, ctx)
        if oracle_state is not None:
            fresh.load_state_dict(oracle_state)
        on_private = train is None
        data = splits.private if train is None else train
        mechanism = self.gradient_mechanism(fields.get("meta", ReleaseMeta()))
        oracle = GradientOracle(fresh.requires_grad_(True), mechanism, data, on_private, ctx.secret("gradients"),
                                public)
        return Release(model=model.cpu().eval(), gradients=oracle, **fields)

    def release_state(self, release: Release) -> dict[str, Any]:
        state = super().release_state(release)
        assert release.model is not None and release.gradients is not None
        state["model"] = release.model.state_dict()
        state["oracle_model"] = release.gradients.model.state_dict()
        if release.synthetic is not None:
            state["synthetic_images"] = release.synthetic.images
            state["synthetic_labels"] = release.synthetic.labels
        return state

    def restore(self, state: Mapping[str, Any], splits: Splits, ctx: RunContext) -> Release:
        base = super().restore(state, splits, ctx)
        model = self.task_model(input_channels(splits.info.shape), splits.info.num_classes, ctx.task)
        model.load_state_dict(state["model"])
        synthetic = (ImageSet(state["synthetic_images"], state["synthetic_labels"])
                     if "synthetic_images" in state else None)
        return self.model_release(model, synthetic, splits, ctx, state["oracle_model"], data=base.data,
                                  transform=base.transform, inference_transform=base.inference_transform,
                                  synthetic=synthetic, meta=base.meta)

    def _initial_task_model(self, train: ImageSet, splits: Splits, ctx: RunContext) -> nn.Module:
        with seeded(ctx.init_generator()):
            return self.task_model(input_channels(train.shape), splits.info.num_classes, ctx.task)

    def train_task_model(self, train: ImageSet, splits: Splits, ctx: RunContext, epochs: Optional[int] = None,
                         log: Optional[dict[str, Any]] = None) -> nn.Module:
        """The suite's recipe (the same as the runner's utility training): seeded, ``ctx.task`` budget unless
        ``epochs`` is given, the task's early stopping; ``log`` receives ``train_classifier``'s log."""
        from privbench.models import early_stopping_of, train_classifier

        t = ctx.task
        return train_classifier(self._initial_task_model(train, splits, ctx), train, epochs=epochs or t.epochs, batch_size=t.batch_size, lr=t.lr,
                                generator=ctx.order_generator(), device=ctx.device, optimizer=self.optimizer,
                                early_stopping=early_stopping_of(t), log=log)

    def train_task_models(self, trains: Sequence[ImageSet], splits: Sequence[Splits], ctxs: Sequence[RunContext],
                          logs: Optional[Sequence[dict[str, Any]]] = None) -> list[nn.Module]:
        """:meth:`train_task_model` of each ``(trains[i], splits[i], ctxs[i])``, trained together as one grouped model
        (``privbench.models.batched``; one by one where that cannot be batched)."""
        from privbench.models import early_stopping_of
        from privbench.models.batched import train_classifiers

        t = ctxs[0].task
        logs = list(logs) if logs is not None else [{} for _ in ctxs]
        if any(c.task != t or c.device != ctxs[0].device for c in ctxs):
            return [self.train_task_model(x, s, c, log=lg) for x, s, c, lg in zip(trains, splits, ctxs, logs)]
        models = [self._initial_task_model(x, s, c) for x, s, c in zip(trains, splits, ctxs)]
        return train_classifiers(models, trains, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                                 generators=[c.order_generator() for c in ctxs], device=ctxs[0].device,
                                 optimizer=self.optimizer, early_stopping=early_stopping_of(t), logs=logs)
