"""Small networks shared by attacks: a residual U-Net decoder and a CNN embedder."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


class UNetDecoder(nn.Module):
    """Two-level U-Net mapping ``(N, c_in, h, w)`` to ``(N, c_out, H, W)`` in [0, 1].

    The input is first resized to ``(H, W)``. When ``c_in == c_out`` the network predicts a residual on top of its
    input and starts as the identity (last layer zero-initialised), so an undefended release is inverted exactly.
    """

    def __init__(self, c_in: int, c_out: int, out_hw: tuple[int, int], width: int = 32) -> None:
        super().__init__()
        self.out_hw = out_hw
        self.residual = c_in == c_out
        self.enc1 = nn.Sequential(_block(c_in, width), _block(width, width))
        self.enc2 = nn.Sequential(_block(width, 2 * width, stride=2), _block(2 * width, 2 * width))
        self.dec = nn.Sequential(_block(3 * width, width), _block(width, width))
        self.out = nn.Conv2d(width, c_out, 3, 1, 1)
        if self.residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, r: Tensor) -> Tensor:
        if tuple(r.shape[-2:]) != self.out_hw:
            r = F.interpolate(r, size=self.out_hw, mode="bilinear", align_corners=False)
        e1 = self.enc1(r)
        e2 = self.enc2(e1)
        up = F.interpolate(e2, size=e1.shape[-2:], mode="bilinear", align_corners=False)
        y = self.out(self.dec(torch.cat([e1, up], 1)))
        return (r + y).clamp(0, 1) if self.residual else torch.sigmoid(y)


class Embedder(nn.Module):
    """CNN ``(N, C, H, W)`` -> L2-normalised embedding ``(N, dim)``."""

    def __init__(self, c_in: int, dim: int = 64, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(_block(c_in, width), _block(width, 2 * width, 2), _block(2 * width, 2 * width, 2),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=1)
