"""Plain baseline defenses: none, Gaussian blur, pixelation, additive Gaussian noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from privbench.core.contracts import RunContext
from privbench.core.errors import InputError
from privbench.core.images import Modality, Splits, Surface
from privbench.core.registry import DEFENSES
from privbench.core.release import Release, ReleaseMeta
from privbench.core.threats import ThreatModel
from privbench.defenses.base import InputDefense, ModelReleaser


def _per_image(images: Tensor, fn) -> Tensor:
    """Apply an OpenCV function to each ``(H,W,C)`` float32 image of ``(N,C,H,W)``."""
    arr = images.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)
    out = np.stack([fn(a).reshape(a.shape) for a in arr])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def training_meta(log: dict[str, float]) -> ReleaseMeta:
    """The released model's training log (``train_top1``; with early stopping ``epochs_run``, ``best_epoch``,
    ``val_top1``) as the release's ``task_*`` metadata (``metrics.release`` of the records)."""
    return ReleaseMeta(extra={f"task_{k}": v for k, v in log.items()})


@DEFENSES.register("none")
class NoDefense(ModelReleaser, InputDefense):
    """No defense: releases the private images unchanged, the task model trained on them and plain shared updates
    (the reference for utility drop and for every attack surface)."""

    modalities = frozenset({Modality.IMAGE, Modality.VIDEO})

    surfaces = frozenset({Surface.DATA, Surface.TRANSFORM, Surface.MODEL, Surface.GRADIENTS})

    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return images.clone()

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        return self.build_many([splits], [ctx])[0]

    def build_many(self, splits: Sequence[Splits], ctxs: Sequence[RunContext]) -> list[Release]:
        """The seeds' task models trained together (``ModelReleaser.train_task_models``)."""
        bases = [InputDefense.build(self, s, c) for s, c in zip(splits, ctxs)]
        logs: list[dict[str, float]] = [{} for _ in ctxs]
        models = self.train_task_models([b.data for b in bases], splits, ctxs, logs)
        return [self.model_release(m, None, s, c, data=b.data, transform=b.transform,
                                   inference_transform=b.inference_transform, meta=training_meta(lg))
                for m, b, s, c, lg in zip(models, bases, splits, ctxs, logs)]


@DEFENSES.register("blur")
class Blur(InputDefense):
    """Gaussian blur with standard deviation ``sigma`` pixels (OpenCV, reflected borders)."""

    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER})
    strength = "sigma"

    @dataclass(frozen=True)
    class Params:
        sigma: float = 2.0

        def __post_init__(self) -> None:
            if not self.sigma > 0:
                raise InputError(f"sigma must be > 0, got {self.sigma}")

    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        s = self.params.sigma
        return _per_image(images, lambda a: cv2.GaussianBlur(a, (0, 0), sigmaX=s, sigmaY=s,
                                                             borderType=cv2.BORDER_REFLECT_101))


@DEFENSES.register("pixelate")
class Pixelate(InputDefense):
    """Pixelation: average over ``block``×``block`` cells (area resampling), then nearest-neighbour upsampling."""

    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER})
    strength = "block"

    @dataclass(frozen=True)
    class Params:
        block: int = 4

        def __post_init__(self) -> None:
            if self.block < 1:
                raise InputError(f"block must be >= 1, got {self.block}")

    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        h, w = images.shape[-2:]
        small = (max(1, round(w / self.params.block)), max(1, round(h / self.params.block)))
        return _per_image(images, lambda a: cv2.resize(cv2.resize(a, small, interpolation=cv2.INTER_AREA),
                                                       (w, h), interpolation=cv2.INTER_NEAREST))


@DEFENSES.register("noise")
class Noise(InputDefense):
    """Additive Gaussian noise with standard deviation ``sigma`` (data range 1), clipped to [0, 1]; a fresh
    secret draw for every call."""

    clip_output = True  # clipping the noised pixels to [0, 1] is part of the mechanism

    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER})
    strength = "sigma"

    @dataclass(frozen=True)
    class Params:
        sigma: float = 0.25

        def __post_init__(self) -> None:
            if not self.sigma >= 0:
                raise InputError(f"sigma must be >= 0, got {self.sigma}")

    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return images + self.params.sigma * torch.randn(images.shape, generator=generator, dtype=images.dtype)
