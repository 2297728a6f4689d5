"""Small networks shared by attacks: a residual U-Net decoder and a CNN embedder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import AttackContext


@dataclass(frozen=True)
class TrainBudget:
    """Training budget shared by attacks that fit a network on aux data."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32

    def __post_init__(self) -> None:
        from privbench.core.errors import InputError

        if self.epochs < 1 or self.batch_size < 1 or self.width < 1 or not self.lr > 0:
            raise InputError("epochs, batch_size and width must be >= 1 and lr > 0")


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


class UNetDecoder(nn.Module):
    """Two-level U-Net mapping ``(N, c_in, h, w)`` to ``(N, c_out, H, W)`` in [0, 1].

    The input is first resized to ``(H, W)``. When ``residual`` (default: ``c_in == c_out``) the network predicts a
    residual on top of the first ``c_out`` input channels and starts as their identity (last layer zero-initialised),
    so an undefended release is inverted exactly.
    """

    def __init__(self, c_in: int, c_out: int, out_hw: tuple[int, int], width: int = 32,
                 residual: bool | None = None) -> None:
        super().__init__()
        self.out_hw = out_hw
        self.c_out = c_out
        self.residual = c_in == c_out if residual is None else residual
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
        return (r[:, :self.c_out] + y).clamp(0, 1) if self.residual else torch.sigmoid(y)


class Embedder(nn.Module):
    """CNN ``(N, C, H, W)`` -> L2-normalised embedding ``(N, dim)``."""

    def __init__(self, c_in: int, dim: int = 64, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(_block(c_in, width), _block(width, 2 * width, 2), _block(2 * width, 2 * width, 2),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=1)


class InpaintNet(nn.Module):
    """Learned inpainting refinement: input ``(N, C+1, H, W)`` = an image whose removed pixels were pre-filled
    (e.g. by classical inpainting) and the removed-mask (1 = removed).

    The U-Net predicts a residual on the pre-fill (zero-initialised, so training starts from the pre-fill) and
    known pixels are kept: ``out = x·(1−m) + pred·m``, in [0, 1].
    """

    def __init__(self, channels: int, hw: tuple[int, int], width: int = 32) -> None:
        super().__init__()
        self.channels = channels
        self.unet = UNetDecoder(channels + 1, channels, hw, width, residual=True)

    def forward(self, xm: Tensor) -> Tensor:
        x, m = xm[:, :self.channels], xm[:, self.channels:]
        return x * (1 - m) + self.unet(xm) * m


def shift_pairs(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Augmentation of ``(input (N,Ci,H,W), target (N,Ct,H,W))`` pairs on one grid: each pair moved together by its
    own random translation of at most ``REGISTRATION_RADIUS`` px (circular), so an attack sees content wherever a
    secret shift may put it. Moving the input alone would add to a defense's own shift, beyond what registration
    forgives."""
    from privbench.metrics.registration import random_shift

    both = random_shift(torch.cat([x, y], 1), g)
    return both[:, :x.shape[1]], both[:, x.shape[1]:]


#: ``augment(inputs, targets, g) -> (inputs, targets)``: a per-batch augmentation of :func:`fit_decoder`'s pairs.
Augment = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


def fit_decoder(net: nn.Module, aux: Tensor, make_inputs: Callable[[Tensor, torch.Generator], Tensor],
                ctx: AttackContext, *, epochs: int, batch_size: int, lr: float, salt: int,
                augment: Optional[Augment] = None, registered: int = 0) -> nn.Module:
    """Train ``net`` to map ``make_inputs(aux, g)`` back to ``aux (N,C,H,W)``.

    ``make_inputs`` is called once per epoch with the same generator, so defenses with secret randomness give a
    fresh draw every epoch. ``augment`` (optional) transforms each batch's pairs (e.g. random shifts). The loss is
    the MSE, or with ``registered = r > 0`` the MSE after registering each target over translations of up to ``r``
    px (:func:`~privbench.metrics.registration.registered_mse`): the attacker is scored after registration, so it
    may answer in any alignment. Cosine-annealed Adam. Returns ``net`` in eval mode.
    """
    from privbench.metrics.registration import registered_mse

    g = ctx.generator(salt=salt)
    net.to(ctx.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for _ in range(epochs):
        inputs = make_inputs(aux, g)
        perm = torch.randperm(len(aux), generator=g)
        net.train()
        for i in range(0, len(aux), batch_size):
            idx = perm[i:i + batch_size]
            x, y = inputs[idx], aux[idx]
            if augment is not None:
                x, y = augment(x, y, g)
            pred, y = net(x.to(ctx.device)), y.to(ctx.device)
            loss = registered_mse(pred, y, registered) if registered > 0 else F.mse_loss(pred, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return net.eval()
