"""Clip re-identification: who is the person in each released clip?

The linker holds a gallery of other original clips of the private people (not the targets themselves) and ranks
it for each released target clip; a hit is a gallery clip of the same identity (rank-1, rank-5, mAP; chance is
computed per query). Two learned embeddings, each trained on the identity-labelled aux clips (people disjoint
from the private ones) with a cross-entropy over aux identities (the usual re-ID baseline, e.g. Zheng et al.,
"Person re-identification: past, present and future", 2016):

- ``appearance``: trained on raw aux clips; released queries are matched against the raw gallery.
- ``adaptive`` (when the public transform is exposed): trained on the aux clips *as the defense releases them*,
  and the gallery is passed through the same public transform, so both sides look alike. On avatars this is a
  gait and body-shape attack: all that survives is how the avatar moves and, without retargeting, its bone
  lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView
from privbench.core.errors import InputError
from privbench.core.images import Access, ImageSet, Modality, Surface
from privbench.core.registry import ATTACKS
from privbench.core.seeding import seeded
from privbench.core.threats import ThreatModel
from privbench.models import map_batched


class ClipEmbedder(nn.Module):
    """Clips ``(N, T, C, H, W)`` in [0, 1] -> L2-normalised embeddings ``(N, dim)``.

    A per-frame 2-D CNN (appearance), a temporal convolution over the frame features (motion and gait), mean
    pooling over time, and a linear projection."""

    def __init__(self, channels: int, dim: int, width: int) -> None:
        super().__init__()
        w = width
        self.frame = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.temporal = nn.Sequential(nn.Conv1d(8 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True))
        self.project = nn.Linear(4 * w + 8 * w, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t = x.shape[:2]
        f = self.frame(x.flatten(0, 1)).view(n, t, -1)  # (N, T, 8w)
        motion = self.temporal(f.transpose(1, 2)).mean(2)  # (N, 4w)
        return F.normalize(self.project(torch.cat([f.mean(1), motion], 1)), dim=1)


@ATTACKS.register("reid")
class ReIdentification(Attack):
    """Clip re-identification against a gallery of other original clips of the private people (learned
    appearance embedding, and an adaptive one trained through the public transform)."""

    modalities = frozenset({Modality.VIDEO})
    threat = ThreatModel.LINKER
    positive_controls = {"none": 0.3}  # the raw clips of the same people
    requires = frozenset({Surface.DATA})
    uses = frozenset({Surface.TRANSFORM})
    access = Access.BLACK_BOX
    adaptive = True
    needs_gallery = True

    @dataclass(frozen=True)
    class Params:
        epochs: int = 15
        batch_size: int = 32
        lr: float = 2e-3
        dim: int = 64
        width: int = 16
        frame_stride: int = 1  # embed every k-th frame (a budget knob: the cost falls k-fold)

        def __post_init__(self) -> None:
            if self.epochs < 1 or self.batch_size < 2 or self.dim < 1 or self.width < 1 or not self.lr > 0 \
                    or self.frame_stride < 1:
                raise InputError("epochs >= 1, batch_size >= 2, dim, width and frame_stride >= 1, lr > 0")

    def run(self, view: AttackView, ctx: AttackContext) -> AttackOutput:
        assert view.release.data is not None and view.gallery is not None
        if not isinstance(view.gallery, ImageSet) or view.aux.identities is None:
            raise InputError("reid needs clips with identities (a video dataset such as synthetic-actions)")
        queries = view.release.data.images[view.targets]
        gallery = view.gallery
        if queries.shape[1:] != gallery.images.shape[1:]:
            raise InputError(f"released clips {tuple(queries.shape[1:])} differ from the originals "
                             f"{tuple(gallery.images.shape[1:])}; reid compares clips of the same shape")
        rankings = {"appearance": self._rank(view.aux, queries, gallery.images, ctx, salt=1)}
        transform = view.release.transform
        if transform is not None:
            aux = ImageSet(transform(view.aux), view.aux.labels, view.aux.identities)
            rankings["adaptive"] = self._rank(aux, queries, transform(gallery), ctx, salt=2)
        return AttackOutput(rankings=rankings)

    def _rank(self, train: ImageSet, queries: Tensor, gallery: Tensor, ctx: AttackContext, salt: int) -> Tensor:
        """Full rankings ``(N, G)`` of ``gallery`` for ``queries`` by cosine similarity of a fresh embedding trained
        to classify ``train``'s identities."""
        p = self.params
        assert train.identities is not None
        k = p.frame_stride
        train = ImageSet(train.images[:, ::k], train.labels, train.identities)
        queries, gallery = queries[:, ::k], gallery[:, ::k]
        people, target = torch.unique(train.identities, return_inverse=True)
        g = ctx.generator(salt=salt)
        with seeded(g):
            net = ClipEmbedder(train.images.shape[2], p.dim, p.width).to(ctx.device)
            head = nn.Linear(p.dim, len(people)).to(ctx.device)
        opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=p.lr)
        n = len(train)
        for _ in range(p.epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, p.batch_size):
                idx = perm[i:i + p.batch_size]
                if len(idx) < 2:
                    continue
                logits = head(net(train.images[idx].to(ctx.device))) / 0.1  # cosine classifier, temperature 0.1
                loss = F.cross_entropy(logits, target[idx].to(ctx.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        q = map_batched(net, queries, ctx.device, 64)
        gal = map_batched(net, gallery, ctx.device, 64)
        return (q @ gal.T).argsort(dim=1, descending=True)
