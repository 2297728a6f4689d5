"""Copy detection that survives a release pipeline's edits (issue 26; docs/AUDIT.md, near-copy).

A careless pipeline shifts, crops, resizes, re-colours, re-encodes, blurs, adds noise and flips. A copy is still
found by comparing *canonical* images and searching the geometry that is left:

1. **Canonical image** (:func:`canonical`): luma, area-resized to ``WORK``² (32²), blurred (σ = 0.6 px: JPEG/WebP
   blocks, noise), then standardised to mean 0 and RMS 1: invariant to brightness, contrast and, to first order,
   gamma and colour jitter.
2. **Candidates** (:func:`candidates`): the ``k`` nearest originals, and their mirror images, by exact faiss search
   on a 16² thumbnail of the canonical image (a flipped copy finds its original's mirror).
3. **Verification** (:func:`verify`): the RMS difference of canonical images minimised over every translation of
   at most ``RADIUS`` px (of 32; 6% of the side: shifts and crops of a few percent) and over the zooms of
   ``ZOOMS`` (crops of up to 5% resized back), by one FFT cross-correlation per candidate
   (:func:`benchmark.metrics.registration.shift_errors`). Two canonical images of unrelated content are about
   sqrt(2) apart; an edited copy is far closer.

:func:`copy_distances` returns, per query, the two smallest verified distances to distinct originals: the audit's
``dcr`` (closest) and ``nndr`` (closest / second closest) statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Side (pixels) of the canonical image.
WORK = 32
#: Largest translation (pixels of the canonical image, each axis) searched by the verification.
RADIUS = 3
#: Zooms of the original searched by the verification: 1 and a crop of 5% resized back (a release crops, never
#: enlarges the canvas).
ZOOMS = (1.0, 1 / 0.95)


@dataclass(frozen=True)
class Canonical:
    """Canonical images ``z (N, WORK, WORK)`` float32 (mean 0, RMS 1 each; a flat image is all 0) and their
    retrieval thumbnails ``thumb (N, 256)`` float32 of unit norm."""

    z: np.ndarray
    thumb: np.ndarray


def _standardise(x: np.ndarray) -> np.ndarray:
    """Each of ``x (N, H, W)`` minus its mean over its RMS (a flat image becomes 0)."""
    x = x - x.mean((1, 2), keepdims=True)
    rms = np.sqrt((x ** 2).mean((1, 2), keepdims=True))
    return np.where(rms > 1e-3, x / np.maximum(rms, 1e-3), 0.0).astype(np.float32)


def canonical(images: np.ndarray) -> Canonical:
    """``images (N, S, S, 3)`` uint8 -> :class:`Canonical` (see the module docstring)."""
    import cv2

    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    small = np.stack([cv2.GaussianBlur(cv2.resize(a, (WORK, WORK), interpolation=cv2.INTER_AREA), (0, 0), 0.6)
                      for a in luma]) if len(luma) else np.zeros((0, WORK, WORK), np.float32)
    z = _standardise(small)
    thumbs = np.stack([cv2.GaussianBlur(cv2.resize(a, (16, 16), interpolation=cv2.INTER_AREA), (0, 0), 1.0)
                       for a in z]) if len(z) else np.zeros((0, 16, 16), np.float32)
    thumb = _standardise(thumbs).reshape(len(z), -1) / 16.0
    return Canonical(z, np.ascontiguousarray(thumb, dtype=np.float32))


def _mirror(c: Canonical) -> Canonical:
    """The canonical images of the horizontally flipped images."""
    z = np.ascontiguousarray(c.z[:, :, ::-1])
    thumb = np.ascontiguousarray(c.thumb.reshape(-1, 16, 16)[:, :, ::-1].reshape(len(z), -1))
    return Canonical(z, thumb)


def candidates(queries: Canonical, originals: Canonical, k: int,
               exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(index (Q, k'), mirrored (Q, k'))``: the nearest originals of each query by thumbnail (exact faiss L2),
    searched among the originals and their mirror images (``mirrored``: the match is the mirror), ``k' = min(2k,
    2N)``. ``exclude_self``: the queries are the originals, and each one's own image and mirror are left out."""
    from .features import nearest

    n = len(originals.z)
    base = np.concatenate([originals.thumb, _mirror(originals).thumb])
    kk = min(2 * k, len(base) - (2 if exclude_self else 0))
    if kk <= 0:
        return np.zeros((len(queries.z), 0), np.int64), np.zeros((len(queries.z), 0), bool)
    _, idx = nearest(base, queries.thumb, kk + (2 if exclude_self else 0), binary=False)
    if exclude_self:
        own = (idx % n) == np.arange(len(queries.z))[:, None]
        order = np.argsort(own, axis=1, kind="stable")[:, :kk]
        idx = np.take_along_axis(idx, order, 1)
    return idx % n, idx >= n


def _zoomed(z: np.ndarray, zoom: float) -> np.ndarray:
    """Each canonical image of ``z (N, W, W)`` seen through a centred crop of ``1 / zoom`` of its side, resized
    back to ``W`` and standardised again."""
    import cv2

    if zoom == 1.0:
        return z
    w = z.shape[-1]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (w - 1) / 2), 0.0, zoom)
    return _standardise(np.stack([cv2.warpAffine(a, m, (w, w), flags=cv2.INTER_LINEAR,
                                                 borderMode=cv2.BORDER_REPLICATE) for a in z]))


def verify(queries: np.ndarray, originals: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``(P,)`` RMS difference between ``queries (P, W, W)`` and ``originals (P, W, W)`` (canonical, paired),
    minimised over the translations of at most :data:`RADIUS` px (edges replicated or wrapped)."""
    import torch

    from ..metrics.registration import shift_errors

    out = np.empty(len(queries), np.float64)
    for s in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[s:s + chunk]))[:, None]
        o = torch.from_numpy(np.ascontiguousarray(originals[s:s + chunk]))[:, None]
        err = shift_errors(o, q, RADIUS).flatten(1).min(1).values / q[0].numel()
        out[s:s + chunk] = err.sqrt().numpy()
    return out


def copy_distances(queries: Canonical, originals: Canonical, k: int = 8,
                   exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(distances (Q, 2), index (Q, 2))``: per query, the smallest verified distance (:func:`verify`, over both
    orientations and :data:`ZOOMS`) to each of its candidate originals, the two smallest over distinct originals,
    ascending (``inf`` and -1 where fewer than two originals exist)."""
    idx, mirrored = candidates(queries, originals, k, exclude_self)
    q_n, c = idx.shape
    dist = np.full((q_n, 2), np.inf)
    best = np.full((q_n, 2), -1, np.int64)
    if c == 0:
        return dist, best
    views = {False: originals.z, True: _mirror(originals).z}
    flat_q = np.repeat(np.arange(q_n), c)
    flat_i, flat_m = idx.ravel(), mirrored.ravel()
    d = np.full(len(flat_i), np.inf)
    for zoom in ZOOMS:
        for mirror, z in views.items():
            zz = _zoomed(z, zoom)
            sel = np.flatnonzero(flat_m == mirror)
            if len(sel):
                d[sel] = np.minimum(d[sel], verify(queries.z[flat_q[sel]], zz[flat_i[sel]]))
    d = d.reshape(q_n, c)
    # one distance per distinct original (the smaller of its orientations): the closest, then the closest other
    order = np.argsort(d, axis=1, kind="stable")
    d_sorted, i_sorted = np.take_along_axis(d, order, 1), np.take_along_axis(idx, order, 1)
    rows = np.arange(q_n)
    dist[:, 0], best[:, 0] = d_sorted[:, 0], i_sorted[:, 0]
    other = i_sorted != i_sorted[:, :1]
    has = other.any(1)
    j = other.argmax(1)
    dist[has, 1], best[has, 1] = d_sorted[rows, j][has], i_sorted[rows, j][has]
    return dist, best
