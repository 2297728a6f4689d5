"""Learned inversion of released images (adaptive, black-box).

The attacker runs the defense's public ``transform`` (fresh secret randomness each epoch) on its own aux images,
trains a U-Net decoder from released to original on those pairs, and applies it to the targets' released
versions. This is the standard adaptive "learned inversion" adversary (e.g. He et al., ACSAC 2019, model
inversion against split learning; Azizian & Bajić, PCS 2022, for learned feature inversion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from benchmark.contracts import Access, Attack, AttackOutput, AttackView, RunContext, Surface
from benchmark.errors import InputError

from . import ATTACKS
from .nets import UNetDecoder


@ATTACKS.register("inversion-decoder")
class InversionDecoder(Attack):
    """Adaptive learned inversion: U-Net trained on (transform(aux), aux) pairs, applied to released targets."""

    requires = frozenset({Surface.DATA, Surface.TRANSFORM})
    access = Access.BLACK_BOX
    adaptive = True

    @dataclass(frozen=True)
    class Params:
        epochs: int = 10
        batch_size: int = 64
        lr: float = 2e-3
        width: int = 32

        def __post_init__(self) -> None:
            if self.epochs < 1 or self.batch_size < 1 or self.width < 1 or not self.lr > 0:
                raise InputError("epochs, batch_size and width must be >= 1 and lr > 0")

    def run(self, view: AttackView, ctx: RunContext) -> AttackOutput:
        assert view.release.data is not None and view.release.transform is not None
        p = self.params
        released_targets = view.release.data.images[view.targets]
        aux = view.aux.images
        g = ctx.generator(salt=101)
        c, h, w = view.image_shape
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        net = UNetDecoder(released_targets.shape[1], c, (h, w), p.width).to(ctx.device)
        opt = torch.optim.Adam(net.parameters(), lr=p.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs)
        for _ in range(p.epochs):
            inputs = view.release.transform(aux, g)  # fresh secret randomness every epoch
            perm = torch.randperm(len(aux), generator=g)
            net.train()
            for i in range(0, len(aux), p.batch_size):
                idx = perm[i:i + p.batch_size]
                pred = net(inputs[idx].to(ctx.device))
                loss = F.mse_loss(pred, aux[idx].to(ctx.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            recon = torch.cat([net(released_targets[i:i + 256].to(ctx.device)).cpu()
                               for i in range(0, len(released_targets), 256)])
        return AttackOutput(reconstructions=recon.clamp(0, 1))
