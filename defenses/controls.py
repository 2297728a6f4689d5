"""Positive controls (issue 25; docs/DESIGN.md, competence): defenses built to be broken.

An attack that scores near 0 on a defense is evidence of privacy only if the same attack is known to break what it
should break. Each control below is a release that a competent attack of one family must see through, and each
attack names its controls with a bar (:attr:`privbench.core.contracts.Attack.positive_controls`). A suite may list a
control like any defense; the runner pairs it only with the attacks that name it, the competence gate reads those
cells, and no table or plot ranks it (``control = True``).

- ``secret-shift``: JPEG re-encoding at ``quality`` and a secret circular shift of at most ``radius`` px per image.
  A person cannot tell the release from the originals; it scored as strong privacy before scores were registered.
- ``keyed-permutation``: one secret permutation of pixel positions (the same for every image and channel). Linear in
  the input, so a linear inverse learnt from aux pairs recovers every image; histograms are unchanged.
- ``shifted-copies``: a synthetic set that is the private images moved by ``shift`` px (memorisation audit).
- ``sparse-holes``: ``share`` of the pixels removed in ``block``×``block`` squares at secret places, filled with 0,
  the mask released (inpainting).
- ``shape-mask``: removes exactly the pixels brighter than ``threshold`` and releases the mask: the mask is the
  image's shape (mask inversion).
- ``memorizer``: the task model trained for ``epochs`` epochs, far past fitting the private split (membership).
- ``class-exemplar``: a softmax regression trained on one private image per class, repeated: the model then
  encodes one member per class, as in Fredrikson et al.'s model inversion (CCS 2015); the GAN attack (Hitaj et al.,
  CCS 2017) with its pixel-space refinement must recover those members.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Splits, Surface, check_images
from privbench.core.registry import DEFENSES
from privbench.core.release import Release, ReleaseMeta
from privbench.core.seeding import derive_seed
from privbench.core.threats import ThreatModel
from privbench.defenses.base import InputDefense, ModelReleaser

_IMAGE_CLAIMS = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER})


def jpeg(images: Tensor, quality: int) -> Tensor:
    """``(N,C,H,W)`` in [0,1], C = 1 or 3, through 8-bit JPEG at ``quality`` (OpenCV, 4:2:0 for colour)."""
    out = []
    for x in images:
        img = np.ascontiguousarray((x.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8))
        if img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise InputError("jpeg: OpenCV could not encode the image")
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED if img.shape[2] == 3 else cv2.IMREAD_GRAYSCALE)
        if dec.ndim == 2:
            dec = dec[..., None]
        elif dec.shape[2] == 3:
            dec = cv2.cvtColor(dec, cv2.COLOR_BGR2RGB)
        out.append(torch.from_numpy(dec.astype(np.float32) / 255).permute(2, 0, 1))
    return torch.stack(out) if out else images.clone()


@DEFENSES.register("secret-shift")
class SecretShift(InputDefense):
    """Positive control: JPEG at ``quality``, then each image rolled by a secret shift of at most ``radius`` px."""

    claims = _IMAGE_CLAIMS
    control = True

    @dataclass(frozen=True)
    class Params:
        quality: int = 100
        radius: int = 2

        def __post_init__(self) -> None:
            if not 1 <= self.quality <= 100 or not 0 <= self.radius <= 8:
                raise InputError(f"quality must lie in [1, 100] and radius in [0, 8], got {self.quality}, "
                                 f"{self.radius}")

    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        r = self.params.radius
        coded = jpeg(images, self.params.quality)
        shifts = torch.randint(-r, r + 1, (len(images), 2), generator=generator).tolist()
        return torch.stack([torch.roll(x, (dy, dx), dims=(-2, -1)) for x, (dy, dx) in zip(coded, shifts)]) \
            if len(images) else coded


@DEFENSES.register("keyed-permutation")
class KeyedPermutation(InputDefense):
    """Positive control: one secret permutation of the H·W pixel positions (from ``key``), shared by all images."""

    claims = _IMAGE_CLAIMS
    control = True

    @dataclass(frozen=True)
    class Params:
        key: int = 0

    def permutation(self, h: int, w: int) -> Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.params.key, "keyed-permutation", h, w))
        return torch.randperm(h * w, generator=g)

    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        n, c, h, w = images.shape
        return images.reshape(n, c, h * w)[..., self.permutation(h, w)].reshape(n, c, h, w).contiguous()


@DEFENSES.register("shifted-copies")
class ShiftedCopies(ModelReleaser):
    """Positive control: releases as "synthetic" the private images rolled by ``shift`` px down (and a model
    trained on them)."""

    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER, ThreatModel.MODEL_HOLDER})
    surfaces = frozenset({Surface.SYNTHETIC, Surface.MODEL, Surface.GRADIENTS})
    control = True

    @dataclass(frozen=True)
    class Params:
        shift: int = 1

        def __post_init__(self) -> None:
            if not 0 <= self.shift <= 8:
                raise InputError(f"shift must lie in [0, 8] pixels, got {self.shift}")

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        moved = torch.roll(splits.private.images, (self.params.shift, 0), dims=(-2, -1)).contiguous()
        synthetic = ImageSet(moved, splits.private.labels.clone())
        model = self.train_task_model(synthetic, splits, ctx)
        return self.model_release(model, synthetic, splits, ctx, synthetic=synthetic, meta=ReleaseMeta())


@DEFENSES.register("sparse-holes")
class SparseHoles(InputDefense):
    """Positive control: about ``share`` of the pixels removed in ``block``×``block`` squares at secret places,
    filled with 0; the removed-mask is released."""

    claims = _IMAGE_CLAIMS
    surfaces = frozenset({Surface.DATA, Surface.TRANSFORM, Surface.MASK})
    control = True

    @dataclass(frozen=True)
    class Params:
        share: float = 0.2
        block: int = 2

        def __post_init__(self) -> None:
            if not 0 < self.share < 1 or self.block < 1:
                raise InputError(f"share must lie in (0, 1) and block be >= 1, got {self.share}, {self.block}")

    def mask_generator(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """``(N,C,H,W)`` -> removed-pixel masks ``(N,1,H,W)`` bool (secret, from ``generator``)."""
        check_images(images, "sparse-holes input")
        n, _, h, w = images.shape
        b = self.params.block
        cells = torch.rand(n, 1, -(-h // b), -(-w // b), generator=generator) < self.params.share
        return cells.repeat_interleave(b, 2).repeat_interleave(b, 3)[..., :h, :w].contiguous()

    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        removed = self.mask_generator(images, generator).expand_as(images)
        return images.masked_fill(removed, 0.0)

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        return _masked_release(self, splits, ctx)


@DEFENSES.register("shape-mask")
class ShapeMask(InputDefense):
    """Positive control: removes the pixels brighter than ``threshold`` (channel mean) and releases that mask,
    so the mask is the image's shape."""

    claims = _IMAGE_CLAIMS
    surfaces = frozenset({Surface.DATA, Surface.TRANSFORM, Surface.MASK})
    control = True

    @dataclass(frozen=True)
    class Params:
        threshold: float = 0.3

        def __post_init__(self) -> None:
            if not 0 < self.threshold < 1:
                raise InputError(f"threshold must lie in (0, 1), got {self.threshold}")

    def mask_generator(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """``(N,C,H,W)`` -> removed-pixel masks ``(N,1,H,W)`` bool (deterministic)."""
        check_images(images, "shape-mask input")
        return images.mean(1, keepdim=True) > self.params.threshold

    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return images.masked_fill(self.mask_generator(images, generator).expand_as(images), 0.0)

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        return _masked_release(self, splits, ctx)


@DEFENSES.register("memorizer")
class Memorizer(ModelReleaser):
    """Positive control: the suite's task model trained for ``epochs`` epochs on the private split (overfit)."""

    claims = frozenset({ThreatModel.MODEL_HOLDER})
    surfaces = frozenset({Surface.MODEL, Surface.GRADIENTS})
    control = True

    @dataclass(frozen=True)
    class Params:
        epochs: int = 40  # overfit: at 20 a 500-image model read LiRA 0.26 (bar 0.3); its shadows retrain through it

        def __post_init__(self) -> None:
            if self.epochs < 1:
                raise InputError(f"epochs must be >= 1, got {self.epochs}")

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        model = self.train_task_model(splits.private, splits, ctx, epochs=self.params.epochs)
        return self.model_release(model, None, splits, ctx, meta=ReleaseMeta())


class PixelSoftmax(nn.Module):
    """Softmax regression on the pixels: ``(N, C, H, W)`` resized to ``side``×``side`` (bilinear, so still linear
    in the input) -> logits ``(N, K)``."""

    def __init__(self, in_channels: int, num_classes: int, side: int = 32) -> None:
        super().__init__()
        self.side = side
        self.linear = nn.Linear(in_channels * side * side, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != (self.side, self.side):
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return self.linear(x.flatten(1))


@DEFENSES.register("class-exemplar")
class ClassExemplar(ModelReleaser):
    """Positive control: a softmax regression (:class:`PixelSoftmax`) trained on the first private image of each
    class, repeated to the private split's size, so the released model encodes one member per class: the setting
    in which Fredrikson et al. (CCS 2015) recovered recognisable training faces by model inversion."""

    claims = frozenset({ThreatModel.MODEL_HOLDER})
    surfaces = frozenset({Surface.MODEL, Surface.GRADIENTS})
    control = True

    @dataclass(frozen=True)
    class Params:
        epochs: int = 6

        def __post_init__(self) -> None:
            if self.epochs < 1:
                raise InputError(f"epochs must be >= 1, got {self.epochs}")

    def task_model(self, in_channels: int, num_classes: int, task: TaskConfig) -> nn.Module:
        return PixelSoftmax(in_channels, num_classes)

    @staticmethod
    def exemplars(private: ImageSet, num_classes: int) -> ImageSet:
        """The private split with each image replaced by the first private image of its class."""
        first = {}
        for i, y in enumerate(private.labels.tolist()):
            first.setdefault(y, i)
        if len(first) < num_classes:
            raise InputError(f"class-exemplar: the private split holds {len(first)} of {num_classes} classes")
        pick = torch.tensor([first[y] for y in private.labels.tolist()])
        return ImageSet(private.images[pick].contiguous(), private.labels.clone())

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        train = self.exemplars(splits.private, splits.info.num_classes)
        model = self.train_task_model(train, splits, ctx, epochs=self.params.epochs)
        return self.model_release(model, train, splits, ctx, meta=ReleaseMeta())


def _masked_release(defense: InputDefense, splits: Splits, ctx: RunContext) -> Release:
    """The release of a mask control: the private images with the removed pixels (its ``mask_generator``) set to
    0, the mask, and the public transform and mask algorithm."""
    images = splits.private.images
    removed = defense.mask_generator(images, ctx.generator("release"))
    return Release(data=ImageSet(images.masked_fill(removed.expand_as(images), 0.0), splits.private.labels.clone()),
                   transform=defense.transform, inference_transform=defense.transform, mask=removed,
                   mask_generator=defense.mask_generator,
                   meta=ReleaseMeta(extra={"masked_fraction": float(removed.float().mean())}))
