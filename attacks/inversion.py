"""Learned inversion of released images or representations (adaptive, black-box).

Image releases: the attacker runs the defense's public ``transform`` (fresh secret randomness each epoch) on its own
aux images, trains a U-Net decoder from released to original on those pairs, and applies it to the targets' released
versions. Representation releases (split computing): the attacker queries the served ``encoder`` on aux images,
trains a fresh decoder from representation to image after the defense is frozen, and applies it to the targets'
representations decoded from the intercepted ``bitstream``. This is the standard adaptive "learned inversion" adversary (e.g. He et al., ACSAC 2019, model
inversion against split learning; Azizian & Bajić, PCS 2022, for learned feature inversion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from benchmark.contracts import Access, Attack, AttackContext, AttackOutput, AttackView, Surface
from benchmark.threats import ThreatModel
from benchmark.models import map_batched
from benchmark.seeding import seeded

from benchmark.registry import ATTACKS
from .nets import TrainBudget, UNetDecoder, fit_decoder


@ATTACKS.register("inversion-decoder")
class InversionDecoder(Attack):
    """Adaptive learned inversion: U-Net trained on (transform(aux), aux) pairs, applied to released targets."""

    threat = ThreatModel.OBSERVER
    requires: frozenset[Surface] = frozenset()
    uses = frozenset({Surface.DATA, Surface.TRANSFORM, Surface.ENCODER, Surface.BITSTREAM})
    access = Access.BLACK_BOX
    adaptive = True
    _MODES = (frozenset({Surface.DATA, Surface.TRANSFORM}), frozenset({Surface.ENCODER, Surface.BITSTREAM}))

    @classmethod
    def requirements(cls) -> str:
        return " or ".join(",".join(sorted(s.value for s in mode)) for mode in cls._MODES)

    def compatible(self, surfaces: frozenset[Surface]) -> Optional[str]:
        if any(mode <= surfaces for mode in self._MODES):
            return None
        return "release lacks data+transform and encoder+bitstream"

    @dataclass(frozen=True)
    class Params(TrainBudget):
        pass

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        rel, p = view.release, self.params
        if rel.encoder is not None and rel.bitstream is not None:
            encoder = rel.encoder.to(ctx.device).eval()
            released_targets = rel.bitstream.decode([rel.bitstream.payloads[i] for i in view.targets.tolist()])

            def make_inputs(aux: torch.Tensor, g: torch.Generator) -> torch.Tensor:
                return map_batched(encoder, aux, ctx.device)
        else:
            assert rel.data is not None and rel.transform is not None
            transform = rel.transform
            released_targets = rel.data.images[view.targets]

            def make_inputs(aux: torch.Tensor, g: torch.Generator) -> torch.Tensor:
                return transform(aux)  # the defender draws fresh secret randomness on every query
        c, h, w = view.image_shape
        with seeded(ctx.generator("decoder-init")):
            net = UNetDecoder(released_targets.shape[1], c, (h, w), p.width)
        fit_decoder(net, view.aux.images, make_inputs, ctx, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                    salt=101)
        return AttackOutput(reconstructions=map_batched(net, released_targets, ctx.device).clamp(0, 1))
