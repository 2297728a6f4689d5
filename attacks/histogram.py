"""Histogram linkage: the adaptive re-identification attack against region shuffling (VisualMixer).

Shuffling pixels inside a region (spatially and across channels) keeps the region's multiset of values. For each
public candidate region side ``s``, every image becomes the sorted values of each of its s×s regions (all channels
pooled) — the exact empirical distribution of the region — and released targets are compared with gallery originals
by the mean per-region Wasserstein-1 distance (L1 between sorted values). A target shuffled with side ``s*`` has
distance 0 to its original at ``s*`` and every multiple of it, so the ranking takes the minimum over sides. The
candidate sides come from the release's public algorithm (``transform.public["region_sides"]``) when the transform
surface is exposed, else every common divisor of the image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView
from privbench.core.errors import InputError
from privbench.core.images import Access, Surface
from privbench.core.registry import ATTACKS
from privbench.core.threats import ThreatModel
from privbench.ops.regions import region_sizes, to_blocks


def region_signature(x: Tensor, s: int) -> Tensor:
    """``(N,C,H,W)`` -> ``(N, C·H·W)``: the sorted values of each s×s region, regions in raster order."""
    return to_blocks(x, s).sort(-1).values.flatten(1)


@ATTACKS.register("histogram-linkage")
class HistogramLinkage(Attack):
    """Adaptive linkage by per-region value distributions, which region shuffling preserves exactly."""

    threat = ThreatModel.LINKER
    requires = frozenset({Surface.DATA})
    positive_controls = {"keyed-permutation": 0.9}  # a permutation keeps every histogram
    uses = frozenset({Surface.TRANSFORM})
    access = Access.BLACK_BOX
    adaptive = True
    needs_gallery = True

    @dataclass(frozen=True)
    class Params:
        top_k: int = 5
        chunk: int = 256

        def __post_init__(self) -> None:
            if self.top_k < 1 or self.chunk < 1:
                raise InputError("top_k and chunk must be >= 1")

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        assert view.release.data is not None and view.gallery is not None
        queries = view.release.data.images[view.targets]
        gallery = view.gallery
        if queries.shape[1:] != gallery.shape[1:]:
            raise InputError(f"histogram-linkage needs released images shaped like the originals, got "
                             f"{tuple(queries.shape[1:])} vs {tuple(gallery.shape[1:])}")
        public = view.release.transform.public if view.release.transform is not None else {}
        sizes = [int(s) for s in public.get("region_sides", region_sizes(*gallery.shape[-2:]))] or [1]
        n_pix = gallery[0].numel()
        best = torch.full((len(queries), len(gallery)), float("inf"), dtype=torch.float64)
        for s in sizes:
            g_sig = region_signature(gallery, s).to(ctx.device, torch.float64)
            q_sig = region_signature(queries, s).to(ctx.device, torch.float64)
            for i in range(0, len(q_sig), self.params.chunk):
                d = torch.cdist(q_sig[i:i + self.params.chunk], g_sig, p=1).cpu() / n_pix
                best[i:i + self.params.chunk] = torch.minimum(best[i:i + self.params.chunk], d)
        k = min(self.params.top_k, len(gallery))
        return AttackOutput(rankings={"histogram": best.topk(k, dim=1, largest=False).indices})
