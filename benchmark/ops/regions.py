"""Square-region views of images, shared by region-based defenses (VisualMixer) and the attacks on them."""

from __future__ import annotations

import torch
from torch import Tensor


def region_sizes(h: int, w: int) -> list[int]:
    """Square region sides that tile an ``h``×``w`` image: common divisors ≥ 2, ascending."""
    return [s for s in range(2, min(h, w) + 1) if h % s == 0 and w % s == 0]


def to_blocks(x: Tensor, s: int) -> Tensor:
    """``(N,C,H,W)`` -> ``(N, n_blocks, C·s·s)``: each row holds one s×s region across all channels."""
    n, c, h, w = x.shape
    return x.view(n, c, h // s, s, w // s, s).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // s) * (w // s), c * s * s)


def from_blocks(b: Tensor, shape: torch.Size, s: int) -> Tensor:
    """Inverse of :func:`to_blocks` for images of ``shape`` ``(N,C,H,W)``."""
    n, c, h, w = shape
    return b.view(n, h // s, w // s, c, s, s).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)
