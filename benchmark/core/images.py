"""The data types every wing shares (docs/DESIGN.md, contracts): surfaces, access levels and modalities, an
:class:`ImageSet` (images or clips with labels and annotations) and a dataset's :class:`Splits`."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
from torch import Tensor

from privbench.core.errors import InputError


class Surface(str, enum.Enum):
    """What may leave the defender (docs/DESIGN.md, Release surfaces)."""

    DATA = "data"
    TRANSFORM = "transform"
    ENCODER = "encoder"
    BITSTREAM = "bitstream"
    MODEL = "model"
    GRADIENTS = "gradients"
    MASK = "mask"  # where content was removed from each released sample, plus the public mask generator
    SYNTHETIC = "synthetic"  # a released data set NOT aligned to private samples (e.g. synthesised images)


class Access(str, enum.Enum):
    WHITE_BOX = "white-box"
    BLACK_BOX = "black-box"


class Modality(str, enum.Enum):
    """What a sample is (docs/DESIGN.md, Modalities): an image ``(C, H, W)`` or a video clip ``(T, C, H, W)``."""

    IMAGE = "image"
    VIDEO = "video"

    @classmethod
    def of(cls, sample_shape: tuple[int, ...]) -> "Modality":
        return cls.VIDEO if len(sample_shape) == 4 else cls.IMAGE


@dataclass(frozen=True)
class ImageSet:
    """Samples with integer labels ``(N,)``: images ``(N, C, H, W)`` or video clips ``(N, T, C, H, W)``, float32 in
    [0, 1] (docs/DESIGN.md, Modalities).

    Optional per-sample annotations (where known; video datasets carry them):
        identities: ``(N,)`` int64 person identity of each sample.
        masks: ``(N, [T,] 1, H, W)`` bool, where a person is.
        keypoints: ``(N, [T,] J, 2)`` float32 pixel coordinates (x, y) of the person's joints.
    """

    images: Tensor
    labels: Tensor
    identities: Optional[Tensor] = None
    masks: Optional[Tensor] = None
    keypoints: Optional[Tensor] = None

    def __post_init__(self) -> None:
        check_images(self.images, "images")
        n = self.images.shape[0]
        if self.labels.ndim != 1 or self.labels.shape[0] != n:
            raise InputError(f"labels: expected shape ({n},), got {tuple(self.labels.shape)}")
        if self.identities is not None and tuple(self.identities.shape) != (n,):
            raise InputError(f"identities: expected shape ({n},), got {tuple(self.identities.shape)}")
        lead = tuple(self.images.shape[:-3])  # (N,) or (N, T)
        if self.masks is not None and (tuple(self.masks.shape[:-3]) != lead or self.masks.shape[-3] != 1
                                       or self.masks.shape[-2:] != self.images.shape[-2:]):
            raise InputError(f"masks: expected shape {lead + (1,) + tuple(self.images.shape[-2:])}, "
                             f"got {tuple(self.masks.shape)}")
        if self.keypoints is not None and (tuple(self.keypoints.shape[:-2]) != lead or self.keypoints.shape[-1] != 2):
            raise InputError(f"keypoints: expected shape {lead + ('J', 2)}, got {tuple(self.keypoints.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: Tensor) -> "ImageSet":
        return ImageSet(self.images[idx], self.labels[idx], *(None if t is None else t[idx] for t in
                                                              (self.identities, self.masks, self.keypoints)))

    def replace_images(self, images: Tensor) -> "ImageSet":
        """The same samples and annotations with other pixels (e.g. a release aligned to these samples)."""
        return dataclasses.replace(self, images=images)

    @property
    def is_video(self) -> bool:
        return self.images.ndim == 5

    @property
    def shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(T, C, H, W)`` for clips."""
        return tuple(self.images.shape[1:])


def check_images(x: Tensor, name: str) -> None:
    """Raise :class:`InputError` unless ``x`` is a finite float tensor ``(N, C, H, W)`` or ``(N, T, C, H, W)`` in
    [0, 1]."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (4, 5):
        raise InputError(f"{name}: expected shape (N, C, H, W) or (N, T, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a float tensor, got {x.dtype}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise InputError(f"{name}: contains NaN or infinite pixels")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise InputError(f"{name}: pixel values must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    shape: tuple[int, ...]  # (C, H, W) or (T, C, H, W)
    sizes: Mapping[str, int]
    hash: str
    split_hashes: Mapping[str, str]


@dataclass(frozen=True)
class Splits:
    """Seeded, disjoint splits. ``targets`` indexes ``private``."""

    private: ImageSet
    aux: ImageSet
    test: ImageSet
    targets: Tensor
    info: DatasetInfo
