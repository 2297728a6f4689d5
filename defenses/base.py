"""Shared base for input-side defenses: one public per-image transform applied at training and inference."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.contracts import Defense, ImageSet, Release, ReleaseMeta, RunContext, Splits, Surface, check_images


class InputDefense(Defense):
    """A defense that releases ``transform(private)`` and applies the same public transform at inference.

    Subclasses implement :meth:`apply` on ``(N,C,H,W)`` images in [0,1] with a seeded generator for the secret
    randomness. Surfaces: ``data`` and ``transform``.
    """

    surfaces: ClassVar[frozenset[Surface]] = frozenset({Surface.DATA, Surface.TRANSFORM})

    @abstractmethod
    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The defense on ``(N,C,H,W)`` images in [0,1]; may return values outside [0,1] (clipped after)."""

    def transform(self, images: Tensor, generator: torch.Generator) -> Tensor:
        check_images(images, f"{self.id} input")
        out = self.apply(images, generator)
        return out.clamp_(0.0, 1.0)

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        released = self.transform(splits.private.images, ctx.generator(salt=1))
        return Release(data=ImageSet(released, splits.private.labels.clone()), transform=self.transform,
                       inference_transform=self.transform, meta=ReleaseMeta())
