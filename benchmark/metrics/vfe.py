"""Visual Feature Entropy (VFE), version 1 (privbench's assumption; see docs/METHODS.md, VisualMixer).

VisualMixer (Li et al., arXiv 2404.04098) measures how much visual structure an image keeps by a "Visual Feature
Entropy"; its exact formula was not retrievable. privbench defines **VFE v1**: for each channel, the gradient
magnitude ``sqrt(dx² + dy²)`` (forward differences, replicated border; values in [0, √2]) is cut into
non-overlapping ``region``×``region`` blocks (partial blocks at the border count), each block's values are binned
into ``bins`` equal bins over [0, √2], and the Shannon entropy (bits) of each histogram is summed over channels and
blocks. Smooth natural images score low; shuffled pixels score high.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

VFE_VERSION = 1
VFE_REGION = 8
VFE_BINS = 64


def gradient_magnitude(x: Tensor) -> Tensor:
    """``(N,C,H,W)`` in [0,1] -> per-channel forward-difference gradient magnitude, same shape, in [0, √2]."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return (dx * dx + dy * dy).sqrt()


def _region_count(h: int, w: int, region: int) -> int:
    return math.ceil(h / region) * math.ceil(w / region)


def visual_feature_entropy(x: Tensor, region: int = VFE_REGION, bins: int = VFE_BINS) -> Tensor:
    """VFE v1 per image ``(N,)`` in bits, in ``[0, C · n_regions · log2(bins)]``."""
    n, c, h, w = x.shape
    g = gradient_magnitude(x.double())
    ph, pw = (-h) % region, (-w) % region
    idx = torch.bucketize(g, torch.linspace(0, math.sqrt(2), bins + 1, dtype=g.dtype, device=g.device)[1:-1])
    # padded cells get bin index `bins` (an overflow bin that is dropped), so partial blocks use real pixels only
    idx = F.pad(idx, (0, pw, 0, ph), value=bins)
    blocks = idx.unfold(2, region, region).unfold(3, region, region).reshape(n * c, -1, region * region)
    n_regions = blocks.shape[1]
    cell = torch.arange(n * c * n_regions, device=idx.device).view(n * c, n_regions, 1) * (bins + 1)
    counts = torch.bincount((cell + blocks).flatten(), minlength=n * c * n_regions * (bins + 1))
    counts = counts.view(n, c, n_regions, bins + 1)[..., :bins].double()  # (N, C, R, bins)
    p = counts / counts.sum(-1, keepdim=True).clamp_min(1)
    ent = -(p * torch.log2(p.clamp_min(1e-300))).sum(-1)
    return ent.sum((1, 2)).float()


def max_vfe(shape: tuple[int, int, int], region: int = VFE_REGION, bins: int = VFE_BINS) -> float:
    """Upper bound of VFE v1 for images of ``shape`` ``(C,H,W)``: every histogram uniform (or as flat as the
    block's pixel count allows)."""
    c, h, w = shape
    per_block = [min(bins, min(region, h - r) * min(region, w - q))
                 for r in range(0, h, region) for q in range(0, w, region)]
    return float(c * sum(math.log2(k) for k in per_block))


def normalized_vfe(x: Tensor, region: int = VFE_REGION, bins: int = VFE_BINS) -> Tensor:
    """VFE v1 divided by :func:`max_vfe`: per image ``(N,)`` in [0, 1]."""
    return visual_feature_entropy(x, region, bins) / max_vfe(tuple(x.shape[1:]), region, bins)
