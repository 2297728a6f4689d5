"""Registration: the small geometric search every alignment-sensitive statistic uses (docs/DESIGN.md,
alignment-robust scores; issue 25).

An attacker may be wrong about where an image sits, and a defense that only moves pixels a little is not private.
So reconstructions are registered to their targets, linkage and nearest-neighbour distances are minimised, and
attacks train, over every integer translation of at most :data:`REGISTRATION_RADIUS` px on each axis, each
applied twice (edges replicated; wrapped around, as a circular shift would). Priors and controls are registered by
the same rule, so an uninformative release still scores about 0.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

#: Largest translation (pixels, each axis) searched by every registered statistic and recorded with it: 4 px,
#: about 14% of a 28 px digit. A secret 3-4 px shift with a per-image gamma scored observer and linker leakage 0.36
#: at a 2 px radius (the issue-25 red team).
REGISTRATION_RADIUS = 4


def translations(x: Tensor, radius: int = REGISTRATION_RADIUS) -> Iterator[Tensor]:
    """``x (N, ..., H, W)`` under every integer translation with |dx|, |dy| <= ``radius`` other than none, each
    twice: edges replicated, and wrapped around (all frames of a clip together). The radius is capped below half
    the image's side (3 px on 8×8 digits); nothing for ``radius <= 0``."""
    h, w = x.shape[-2:]
    radius = min(radius, (min(h, w) - 1) // 2)
    if radius <= 0:
        return
    padded = torch.nn.functional.pad(x.reshape(-1, 1, h, w).float(), (radius,) * 4, mode="replicate")
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx or dy:
                yield padded[..., radius + dy:radius + dy + h, radius + dx:radius + dx + w].reshape(x.shape)
                yield torch.roll(x.float(), (-dy, -dx), dims=(-2, -1))


def register(rec: Tensor, ref: Tensor, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """Each of ``rec (N, ..., H, W)`` moved by the translation of :func:`translations` that minimises its mean
    squared error to ``ref`` (same shape), or left where it is when none is closer."""
    best, best_err = rec, ((rec.float() - ref.float()) ** 2).flatten(1).mean(1)
    for moved in translations(rec, radius):
        err = ((moved - ref.float()) ** 2).flatten(1).mean(1)
        better = err < best_err
        if better.any():
            keep = better.reshape((-1,) + (1,) * (rec.ndim - 1))
            best = torch.where(keep, moved.to(rec.dtype), best)
            best_err = torch.where(better, err, best_err)
    return best


def registered_mse(pred: Tensor, target: Tensor, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """Mean over the batch of ``min`` over :func:`translations` (and none) of the per-sample MSE between
    ``pred (N, ..., H, W)`` and the moved ``target``: the training loss of an attacker scored after registration
    (differentiable in ``pred``)."""
    err = ((pred - target) ** 2).flatten(1).mean(1)
    for moved in translations(target.detach(), radius):
        err = torch.minimum(err, ((pred - moved.to(pred.dtype)) ** 2).flatten(1).mean(1))
    return err.mean()


def random_shift(x: Tensor, generator: torch.Generator, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """Each of ``x (N, ..., H, W)`` rolled by its own uniformly drawn translation of at most ``radius`` px per
    axis (the augmentation that teaches an attack to expect a secret shift)."""
    if radius <= 0:
        return x
    shifts = torch.randint(-radius, radius + 1, (len(x), 2), generator=generator)
    out = torch.empty_like(x)
    for (dy, dx) in shifts.unique(dim=0).tolist():
        at = torch.nonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).flatten()
        out[at] = torch.roll(x[at], (dy, dx), dims=(-2, -1))
    return out


def shift_tolerant_distances(queries: Tensor, pool: Tensor, radius: int = REGISTRATION_RADIUS,
                             chunk: int = 512) -> Tensor:
    """``(n, m)`` pixel-L2 distances from each of ``queries (n, ...)`` to each of ``pool (m, ...)`` (same
    per-item shape), minimised over the pool's :func:`translations` (and none): a copy moved a little is at
    distance ~0 from its original."""
    q = queries.flatten(1).float()
    best = torch.cdist(q, pool.flatten(1).float())
    for moved in translations(pool, radius):
        flat = moved.flatten(1)
        for start in range(0, len(q), chunk):
            part = slice(start, start + chunk)
            best[part] = torch.minimum(best[part], torch.cdist(q[part], flat))
    return best


def nearest_index(queries: Tensor, pool: Tensor, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """For each of ``queries (n, ...)``, the index of the closest image of ``pool (m, ...)`` by
    :func:`shift_tolerant_distances`, computed in blocks (memory ``O(512·m)``). The nearest-neighbour audit, its
    control and shift-tolerant linkage use this one rule."""
    out = torch.empty(len(queries), dtype=torch.long)
    for start in range(0, len(queries), 512):
        part = slice(start, start + 512)
        out[part] = shift_tolerant_distances(queries[part], pool, radius).argmin(1)
    return out


def rank_normalise(x: Tensor) -> Tensor:
    """Each image of ``x (N, ...)`` replaced by the ranks of its values, averaged over ties, scaled to [0, 1]
    (histogram equalisation): invariant to any increasing change of intensity (brightness, contrast, gamma)."""
    flat = x.flatten(1).float()
    ordered = flat.sort(1).values
    lo = torch.searchsorted(ordered, flat, right=False).float()
    hi = torch.searchsorted(ordered, flat, right=True).float()
    return ((lo + hi - 1) / 2 / max(1, flat.shape[1] - 1)).view_as(x)


def shift_tolerant_ranking(queries: Tensor, pool: Tensor, k: int, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """``(n, k)`` indices of ``pool`` nearest each query by :func:`shift_tolerant_distances` (blocks of 512)."""
    k = min(k, len(pool))
    return torch.cat([shift_tolerant_distances(queries[s:s + 512], pool, radius).topk(k, dim=1, largest=False)
                      .indices for s in range(0, len(queries), 512)]) if len(queries) else \
        torch.empty(0, k, dtype=torch.long)
