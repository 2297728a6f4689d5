"""Learned inversion of released images (adaptive, black-box).

The attacker runs the defense's public ``transform`` (fresh secret randomness each epoch) on its own aux images,
trains a U-Net decoder from released to original on those pairs, and applies it to the targets' released
versions. This is the standard adaptive "learned inversion" adversary (e.g. He et al., ACSAC 2019, model
inversion against split learning; Azizian & Bajić, PCS 2022, for learned feature inversion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.contracts import Access, Attack, AttackOutput, AttackView, RunContext, Surface

from . import ATTACKS
from .nets import TrainBudget, UNetDecoder, apply_batched, fit_decoder


@ATTACKS.register("inversion-decoder")
class InversionDecoder(Attack):
    """Adaptive learned inversion: U-Net trained on (transform(aux), aux) pairs, applied to released targets."""

    requires = frozenset({Surface.DATA, Surface.TRANSFORM})
    access = Access.BLACK_BOX
    adaptive = True

    @dataclass(frozen=True)
    class Params(TrainBudget):
        pass

    def run(self, view: AttackView, ctx: RunContext) -> AttackOutput:
        assert view.release.data is not None and view.release.transform is not None
        p = self.params
        released_targets = view.release.data.images[view.targets]
        c, h, w = view.image_shape
        torch.manual_seed(ctx.seed + 101)
        net = UNetDecoder(released_targets.shape[1], c, (h, w), p.width)
        fit_decoder(net, view.aux.images, view.release.transform, ctx, epochs=p.epochs, batch_size=p.batch_size,
                    lr=p.lr, salt=101)
        return AttackOutput(reconstructions=apply_batched(net, released_targets, ctx.device).clamp(0, 1))
