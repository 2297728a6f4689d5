"""White-box optimisation-based inversion of a served encoder (Mahendran & Vedaldi, CVPR 2015, "Understanding deep
image representations by inverting them"; He, Zhang & Lee, ACSAC 2019, white-box model inversion in split learning).

The attacker holds the encoder's weights and the targets' representations (decoded from the intercepted
bitstream). It optimises an input image ``x = sigmoid(u)`` with Adam to minimise
``‖encoder(x) − z‖² / ‖z‖² + λ_TV·TV(x)`` from several random starts and keeps, per target, the start with the lowest
feature loss.
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
from privbench.metrics.image import total_variation


@ATTACKS.register("inversion-optim")
class OptimInversion(Attack):
    """White-box inversion: optimise inputs whose encoding matches the targets' representations (TV prior)."""

    threat = ThreatModel.OBSERVER
    positive_controls = {"split-none": 0.3}  # a split model trained without any privacy term
    requires = frozenset({Surface.ENCODER, Surface.BITSTREAM})
    access = Access.WHITE_BOX
    adaptive = True

    @dataclass(frozen=True)
    class Params:
        steps: int = 300
        lr: float = 0.3
        tv: float = 0.001
        restarts: int = 2
        batch_size: int = 128

        def __post_init__(self) -> None:
            if self.steps < 1 or self.restarts < 1 or self.batch_size < 1:
                raise InputError("steps, restarts and batch_size must be >= 1")
            if not self.lr > 0 or self.tv < 0:
                raise InputError("lr must be > 0 and tv >= 0")

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        rel = view.release
        assert rel.encoder is not None and rel.bitstream is not None
        encoder = rel.encoder.to(ctx.device).eval()
        for prm in encoder.parameters():
            prm.requires_grad_(False)
        z_all = rel.bitstream.decode([rel.bitstream.payloads[i] for i in view.targets.tolist()])
        g = ctx.generator(salt=505)
        out = []
        for i in range(0, len(z_all), self.params.batch_size):
            out.append(self._invert(encoder, z_all[i:i + self.params.batch_size].to(ctx.device), view, g, ctx))
        return AttackOutput(reconstructions=torch.cat(out).clamp(0, 1))

    def _invert(self, encoder: torch.nn.Module, z: Tensor, view: AttackView, g: torch.Generator,
                ctx: AttackContext) -> Tensor:
        p = self.params
        norm = z.flatten(1).pow(2).sum(1).clamp_min(1e-12)
        best_x = torch.zeros((len(z),) + tuple(view.image_shape))
        best_loss = torch.full((len(z),), float("inf"))
        for _ in range(p.restarts):
            u = (torch.randn((len(z),) + tuple(view.image_shape), generator=g) * 0.5).to(ctx.device)
            u.requires_grad_(True)
            opt = torch.optim.Adam([u], lr=p.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.steps)
            for _ in range(p.steps):
                x = torch.sigmoid(u)
                feat = ((encoder(x) - z).flatten(1).pow(2).sum(1) / norm)
                loss = (feat + p.tv * total_variation(x)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            with torch.no_grad():
                x = torch.sigmoid(u)
                final = ((encoder(x) - z).flatten(1).pow(2).sum(1) / norm).cpu()
            better = final < best_loss
            best_x[better] = x.detach().cpu()[better]
            best_loss = torch.minimum(best_loss, final)
        return best_x
