"""Nearest-neighbour memorisation audit of released data: for each private original, the closest released image
(pixel L2, shift-tolerant: over translations of up to ``radius`` px, as the central scores register), scored centrally (PSNR, SSIM, ... and the share above the memorisation threshold ``MEMORIZATION_SSIM``).

Runs on any release of images, aligned (``data``) or not (``synthetic``). The auditor holds the originals (the
gallery); the released set is what an outsider sees. For ``none`` every original is its own nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView
from privbench.core.errors import InputError
from privbench.core.images import Access, Surface
from privbench.core.registry import ATTACKS
from privbench.core.threats import ThreatModel
from privbench.metrics.registration import REGISTRATION_RADIUS, nearest_index


@ATTACKS.register("nearest-neighbour")
class NearestNeighbour(Attack):
    """Closest released image (pixel L2) to each original: memorisation audit of synthetic or released data."""

    threat = ThreatModel.LINKER  # the auditor holds the originals
    requires = frozenset()
    uses = frozenset({Surface.DATA, Surface.SYNTHETIC})
    access = Access.BLACK_BOX
    needs_gallery = True
    positive_controls = {"shifted-copies": 0.9, "secret-shift": 0.9}

    @dataclass(frozen=True)
    class Params:
        radius: int = REGISTRATION_RADIUS  # largest translation (px) a released copy may be moved by

        def __post_init__(self) -> None:
            if not 0 <= self.radius <= 8:
                raise InputError(f"radius must lie in [0, 8] pixels, got {self.radius}")

    @classmethod
    def requirements(cls) -> str:
        return "data|synthetic"

    def compatible(self, surfaces: frozenset[Surface]) -> Optional[str]:
        return None if surfaces & self.uses else "release lacks surface(s): data or synthetic"

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        rel = view.release.synthetic if view.release.synthetic is not None else view.release.data
        assert rel is not None and view.gallery is not None
        released = rel.images
        if released.shape[1:] != view.gallery.shape[1:]:
            released = torch.nn.functional.interpolate(released, size=view.gallery.shape[-2:], mode="nearest")
        # shift-tolerant: a released image moved by up to `radius` px is still its original's neighbour
        nearest = nearest_index(view.gallery, released, self.params.radius)
        return AttackOutput(per_gallery=released[nearest], extra={"released_images": float(len(released))})
