"""Re-identification: link each target's released version to its original in a gallery of private originals.

Three rankings are returned: nearest neighbour in pixel space (released resized to the gallery's size; the
distance is minimised over translations of up to ``radius`` px, :mod:`privbench.metrics.registration`), the same
on rank-normalised images (invariant to brightness, contrast and gamma), and, when the
defense's public ``transform`` is exposed, nearest neighbour in a feature space learned on aux pairs with a
contrastive (InfoNCE, Oord et al. 2018) objective, the released side randomly shifted by up to ``radius`` px —
the adaptive variant. Positive control: ``secret-shift`` (``defenses/controls.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from privbench.attacks.nets import Embedder
from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView
from privbench.core.errors import InputError
from privbench.core.images import Access, Surface
from privbench.core.registry import ATTACKS
from privbench.core.seeding import seeded
from privbench.core.threats import ThreatModel
from privbench.metrics.registration import REGISTRATION_RADIUS, random_shift, rank_normalise, shift_tolerant_ranking
from privbench.models import map_batched


@ATTACKS.register("linkage")
class Linkage(Attack):
    """Nearest-neighbour re-identification in pixel space and in a contrastively learned space (adaptive)."""

    threat = ThreatModel.LINKER
    requires = frozenset({Surface.DATA})
    uses = frozenset({Surface.TRANSFORM})
    access = Access.BLACK_BOX
    adaptive = True
    needs_gallery = True
    positive_controls = {"secret-shift": 0.9}

    @dataclass(frozen=True)
    class Params:
        epochs: int = 10
        batch_size: int = 128
        lr: float = 2e-3
        dim: int = 64
        width: int = 32
        temperature: float = 0.1
        top_k: int = 5
        radius: int = REGISTRATION_RADIUS  # largest translation (px) searched by the pixel ranking

        def __post_init__(self) -> None:
            if self.epochs < 0 or self.batch_size < 2 or self.dim < 1 or self.top_k < 1 or self.width < 1:
                raise InputError("epochs must be >= 0, batch_size >= 2, dim, width and top_k >= 1")
            if not 0 <= self.radius <= 8:
                raise InputError(f"radius must lie in [0, 8] pixels, got {self.radius}")
            if not self.temperature > 0 or not self.lr > 0:
                raise InputError("temperature and lr must be > 0")

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        assert view.release.data is not None and view.gallery is not None
        p = self.params
        gallery = view.gallery
        queries = view.release.data.images[view.targets]
        if queries.shape[1:] != gallery.shape[1:]:
            queries_px = F.interpolate(queries, size=gallery.shape[-2:], mode="bilinear", align_corners=False)
            if queries_px.shape[1] != gallery.shape[1]:
                queries_px = queries_px.mean(1, keepdim=True).expand(-1, gallery.shape[1], -1, -1)
        else:
            queries_px = queries
        # shift-tolerant: a released image moved by up to `radius` px is still nearest its original
        rankings = {"pixel": shift_tolerant_ranking(queries_px, gallery, p.top_k, p.radius),
                    # ranks within each image: a secret brightness, contrast or gamma change does not hide it
                    "rank": shift_tolerant_ranking(rank_normalise(queries_px), rank_normalise(gallery), p.top_k,
                                                   p.radius)}
        if view.release.transform is not None and p.epochs > 0:
            rankings["learned"] = self._learned(view, queries, gallery, ctx)
        return AttackOutput(rankings=rankings)

    def _learned(self, view: AttackView, queries: torch.Tensor, gallery: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        p = self.params
        g = ctx.generator(salt=202)
        with seeded(g):
            f_rel = Embedder(queries.shape[1], p.dim, p.width).to(ctx.device)
            f_org = Embedder(gallery.shape[1], p.dim, p.width).to(ctx.device)
        opt = torch.optim.Adam(list(f_rel.parameters()) + list(f_org.parameters()), lr=p.lr)
        aux = view.aux.images
        assert view.release.transform is not None
        for _ in range(p.epochs):
            released = view.release.transform(aux)
            perm = torch.randperm(len(aux), generator=g)
            for i in range(0, len(aux), p.batch_size):
                idx = perm[i:i + p.batch_size]
                if len(idx) < 2:
                    continue
                # augmentation: a random shift of the released side, so a secret shift does not defeat the embedding
                zr = f_rel(random_shift(released[idx], g, p.radius).to(ctx.device))
                zo = f_org(aux[idx].to(ctx.device))
                logits = zr @ zo.T / p.temperature
                target = torch.arange(len(idx), device=ctx.device)
                loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        zq = map_batched(f_rel, queries, ctx.device, 512)
        zg = map_batched(f_org, gallery, ctx.device, 512)
        return (zq @ zg.T).topk(min(p.top_k, len(gallery)), dim=1).indices
