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
from torch.nn import functional as F

#: Largest translation (pixels, each axis) searched by every registered statistic and recorded with it: 4 px,
#: about 14% of a 28 px digit. A secret 3-4 px shift with a per-image gamma scored observer and linker leakage 0.36
#: at a 2 px radius (the issue-25 red team).
REGISTRATION_RADIUS = 4


def _radius(h: int, w: int, radius: int) -> int:
    """``radius`` capped below half the image's side (3 px on 8×8 digits); 0 means no search."""
    return max(0, min(radius, (min(h, w) - 1) // 2))


def _planes(x: Tensor) -> Tensor:
    """``x (N, ..., H, W)`` viewed as ``(N, P, H, W)``: every channel and frame of an item is one plane, and all
    planes of an item move together."""
    return x.reshape(len(x), -1, *x.shape[-2:])


def _windows(x: Tensor, r: int) -> Tensor:
    """``(2, N, P, K, K, H, W)`` strided view, ``K = 2r + 1``: ``[0, n, :, r + dy, r + dx]`` is item ``n`` moved
    by ``(dy, dx)`` with its edges replicated, ``[1, ...]`` the same wrapped around (``torch.roll(x, (-dy,
    -dx))``). No copy beyond the two padded images."""
    n, p, h, w = x.shape
    flat = x.reshape(n * p, 1, h, w)
    padded = torch.stack([F.pad(flat, (r,) * 4, mode=mode).reshape(n, p, h + 2 * r, w + 2 * r)
                          for mode in ("replicate", "circular")])
    return padded.unfold(3, h, 1).unfold(4, w, 1)


def translations(x: Tensor, radius: int = REGISTRATION_RADIUS) -> Iterator[Tensor]:
    """``x (N, ..., H, W)`` under every integer translation with |dx|, |dy| <= ``radius`` (capped by
    :func:`_radius`) other than none, each twice: edges replicated, and wrapped around (all frames of a clip
    together). The reference enumeration that :func:`shift_errors` computes in one pass; nothing for radius 0."""
    h, w = x.shape[-2:]
    r = _radius(h, w, radius)
    if r == 0:
        return
    views = _windows(_planes(x.float()), r)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx or dy:
                for mode in range(2):
                    yield views[mode, :, :, r + dy, r + dx].reshape(x.shape)


def _fast_size(n: int) -> int:
    """The smallest length >= ``n`` whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        k = n
        for q in (2, 3, 5):
            while k % q == 0:
                k //= q
        if k == 1:
            return n
        n += 1


def shift_errors(moving: Tensor, fixed: Tensor, radius: int = REGISTRATION_RADIUS,
                 pairs: tuple[Tensor, Tensor] | None = None, chunk: int = 8192, wrap: bool = True) -> Tensor:
    """``(P, 2, K, K)`` (``(P, 1, K, K)`` without ``wrap``: replicated edges only) sum of squared differences
    between ``fixed[j] (..., H, W)`` and ``moving[i]`` moved by every
    translation of :func:`_windows` (``K = 2r + 1``; the centre is none), for the pairs ``(i, j)`` of ``pairs``
    (index tensors of equal length; default: item ``i`` with item ``i``, same shapes).

    Computed as ``|m_s|² − 2⟨m_s, f⟩ + |f|²``: the cross terms of all translations by one FFT cross-correlation
    per edge rule (each item's spectrum computed once, however many pairs it is in), ``|m_s|²`` by an integral
    image. About 160× fewer kernel calls than enumerating :func:`translations`; differentiable in both arguments;
    clamped at 0 (rounding)."""
    h, w = fixed.shape[-2:]
    r = _radius(h, w, radius)
    m, f = _planes(moving), _planes(fixed.to(moving.dtype))
    n, p = m.shape[:2]
    mi, fi = pairs if pairs is not None else (torch.arange(n), torch.arange(n))
    k, hp, wp = 2 * r + 1, h + 2 * r, w + 2 * r
    size = (_fast_size(hp), _fast_size(wp))  # no wrap-around reaches the offsets <= 2r read below
    rep = F.pad(m.reshape(n * p, 1, h, w), (r,) * 4, mode="replicate").reshape(n, p, hp, wp)
    fft, ifft = torch.fft.rfft2, torch.fft.irfft2
    spec_rep, spec_f_rep = fft(rep, s=size), fft(f, s=size).conj()
    spec_m, spec_f = (fft(m), fft(f).conj()) if wrap else (None, None)
    sq = F.pad((rep ** 2).sum(1).cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    box = sq[:, h:, w:] - sq[:, :k, w:] - sq[:, h:, :k] + sq[:, :k, :k]  # (n, K, K): |m_s|², replicated edges
    norm_m, norm_f = (m ** 2).flatten(1).sum(1), (f ** 2).flatten(1).sum(1)
    out = []
    for s in range(0, len(mi), chunk):
        a, b = mi[s:s + chunk], fi[s:s + chunk]
        # replicated: linear correlation of the padded image with f
        cross_rep = ifft(spec_rep[a] * spec_f_rep[b], s=size)[..., :k, :k].sum(1)
        # wrapped: circular correlation at the image's own size, offsets -r..r moved to 0..2r
        if wrap:
            cross_wrap = torch.roll(ifft(spec_m[a] * spec_f[b], s=(h, w)).sum(1), (r, r), dims=(-2, -1))[..., :k, :k]
            err = (torch.stack([box[a], norm_m[a, None, None].expand(len(a), k, k)], 1)
                   - 2 * torch.stack([cross_rep, cross_wrap], 1) + norm_f[b, None, None, None])
        else:
            err = (box[a] - 2 * cross_rep + norm_f[b, None, None])[:, None]
        out.append(err.clamp_min(0))
    return torch.cat(out) if out else torch.zeros(0, 2 if wrap else 1, k, k, dtype=m.dtype)


def register(rec: Tensor, ref: Tensor, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """Each of ``rec (N, ..., H, W)`` moved by the translation of :func:`translations` that minimises its mean
    squared error to ``ref`` (same shape), or left where it is when none is closer (errors in float64)."""
    h, w = rec.shape[-2:]
    r = _radius(h, w, radius)
    if r == 0 or len(rec) == 0:
        return rec
    exact = ((rec.double() - ref.double()) ** 2).flatten(1).sum(1, keepdim=True)
    errs = torch.cat([exact, shift_errors(rec.double(), ref.double(), r).flatten(1)], 1)
    choice = errs.argmin(1)  # 0: stay (ties keep the image where it is)
    moved = choice > 0
    if not moved.any():
        return rec
    flat = choice[moved] - 1
    k = 2 * r + 1
    mode, a, b = flat // (k * k), flat % (k * k) // k, flat % k
    picked = _windows(_planes(rec[moved]), r)[mode, torch.arange(len(flat)), :, a, b]
    out = rec.clone()
    out[moved] = picked.reshape((len(flat),) + rec.shape[1:])
    return out


def registered_mse(pred: Tensor, target: Tensor, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """Mean over the batch of ``min`` over :func:`translations` (and none) of the per-sample MSE between
    ``pred (N, ..., H, W)`` and the moved ``target``: the training loss of an attacker scored after registration
    (differentiable in ``pred``; one :func:`shift_errors` pass per batch)."""
    h, w = pred.shape[-2:]
    if _radius(h, w, radius) == 0:
        return ((pred - target) ** 2).mean()
    errs = shift_errors(target.detach().to(pred.dtype), pred, radius).flatten(1)
    return (errs.min(1).values / pred[0].numel()).mean()


def random_shift(x: Tensor, generator: torch.Generator, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """Each of ``x (N, ..., H, W)`` rolled by its own uniformly drawn translation of at most ``radius`` px per
    axis (the augmentation that teaches an attack to expect a secret shift); one gather, no loop."""
    if radius <= 0:
        return x
    shifts = torch.randint(-radius, radius + 1, (len(x), 2), generator=generator)
    # torch.roll(x, (dy, dx)) is the wrapped window at offset (-dy, -dx); the padding covers any radius
    h, w = x.shape[-2:]
    planes = _planes(x)
    flat = F.pad(planes.reshape(-1, 1, h, w), (radius,) * 4, mode="circular") if radius < min(h, w) else None
    if flat is None:  # a radius wider than the image: fall back to one roll per item
        return torch.stack([torch.roll(x[i], tuple(s), dims=(-2, -1)) for i, s in enumerate(shifts.tolist())])
    views = flat.reshape(len(x), -1, h + 2 * radius, w + 2 * radius).unfold(2, h, 1).unfold(3, w, 1)
    return views[torch.arange(len(x)), :, radius - shifts[:, 0], radius - shifts[:, 1]].reshape(x.shape)


def shift_tolerant_nearest(queries: Tensor, pool: Tensor, k: int, radius: int = REGISTRATION_RADIUS,
                           block: int = 512) -> tuple[Tensor, Tensor]:
    """``(n, k)`` distances and indices of the ``k`` images of ``pool (m, ...)`` nearest each of ``queries (n,
    ...)`` (same per-item shape), nearest first, in pixel L2 minimised over the pool's :func:`translations` (and
    none): a copy moved a little is at distance ~0 from its original. Exact: one matrix product per translation
    and block of ``block`` queries, ``|q|² + |p_s|² − 2⟨q, p_s⟩`` with the moved norms from an integral image.
    Memory ``O(block · m)``."""
    n, m = len(queries), len(pool)
    k = min(k, m)
    if n == 0 or k == 0:
        return torch.empty(n, k), torch.empty(n, k, dtype=torch.long)
    q, g = _planes(queries.float()), _planes(pool.float())
    h, w = q.shape[-2:]
    r = _radius(h, w, radius)
    views = _windows(g, r)  # (2, m, P, K, K, H, W)
    # |p_s|²: wrapped translations keep the norm; replicated ones by the integral image of shift_errors
    norms = (shift_errors(g, torch.zeros_like(g[:1]).expand_as(g), r) if r else
             (g ** 2).flatten(1).sum(1)[:, None, None, None])  # (m, 2, K, K)
    qf = q.flatten(1)
    q_norm = (qf ** 2).sum(1)
    shifts = [(mode, a, b) for mode in range(2 if r else 1) for a in range(2 * r + 1) for b in range(2 * r + 1)
              if not (mode and a == r and b == r)]  # none is counted once, with the replicated edges
    dist, index = torch.empty(n, k), torch.empty(n, k, dtype=torch.long)
    for s in range(0, n, block):
        part = slice(s, s + block)
        best = torch.full((len(qf[part]), m), float("inf"))
        for mode, a, b in shifts:
            d2 = torch.addmm(q_norm[part, None] + norms[None, :, mode, a, b], qf[part],
                             views[mode, :, :, a, b].reshape(m, -1).T, alpha=-2)
            torch.minimum(best, d2, out=best)
        top = best.topk(k, dim=1, largest=False)
        dist[part], index[part] = top.values.clamp_min(0).sqrt(), top.indices
    return dist, index


def nearest_index(queries: Tensor, pool: Tensor, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """For each of ``queries (n, ...)``, the index of the closest image of ``pool (m, ...)`` by
    :func:`shift_tolerant_nearest`. The nearest-neighbour audit, its control, the within-class best match and
    shift-tolerant linkage use this one rule."""
    return shift_tolerant_nearest(queries, pool, 1, radius)[1][:, 0]


def rank_normalise(x: Tensor) -> Tensor:
    """Each image of ``x (N, ...)`` replaced by the ranks of its values, averaged over ties, scaled to [0, 1]
    (histogram equalisation): invariant to any increasing change of intensity (brightness, contrast, gamma)."""
    flat = x.flatten(1).float()
    ordered = flat.sort(1).values
    lo = torch.searchsorted(ordered, flat, right=False).float()
    hi = torch.searchsorted(ordered, flat, right=True).float()
    return ((lo + hi - 1) / 2 / max(1, flat.shape[1] - 1)).view_as(x)


def shift_tolerant_ranking(queries: Tensor, pool: Tensor, k: int, radius: int = REGISTRATION_RADIUS) -> Tensor:
    """``(n, k)`` indices of ``pool`` nearest each query, nearest first (:func:`shift_tolerant_nearest`)."""
    return shift_tolerant_nearest(queries, pool, k, radius)[1]
