"""Copy detection that survives a release pipeline's edits (issue 26; docs/AUDIT.md, near-copy).

A careless pipeline shifts, crops, resizes, re-colours, re-encodes, blurs, adds noise and flips. A copy is still
found by comparing *canonical* images and searching the geometry that is left:

1. **Canonical image** (:func:`canonical`): luma, area-resized to ``WORK``² (32²), blurred (σ = 0.6 px: JPEG/WebP
   blocks, noise), then standardised to mean 0 and RMS 1: invariant to brightness, contrast and, to first order,
   gamma and colour jitter.
2. **Candidates** (:func:`candidates`): the nearest originals, and their mirror images, by exact faiss search on a
   16² thumbnail of the canonical image projected on its :data:`CANDIDATE_DIMS` leading principal axes, and of its
   moves by :data:`QUERY_SHIFTS` (on :data:`MOVED_DIMS` axes; a flipped copy finds its original's mirror).
3. **Verification** (:func:`verify`): the normalised cross-correlation of the query's interior (a
   :data:`RADIUS`-pixel border left out) with the original's windows, maximised over every translation of at most
   :data:`RADIUS` px (of 32: shifts and crops of a few percent), by FFT cross-correlation; each query's
   :data:`REFINE` best candidates again over :data:`VARIANTS` (zooms, half-pixel moves, a blur) and as whole images
   (:func:`verify_whole`). Two canonical
   images of unrelated content are about sqrt(2) apart; an edited copy is far closer.

:func:`copy_distances` returns, per query, the two smallest verified distances to distinct originals; the audit's
statistic is their ratio (``nndr``, :mod:`.risks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: Side (pixels) of the canonical image.
WORK = 32
#: Blur (canonical pixels) of the canonical image: JPEG/WebP blocks and noise.
BLUR = 0.6
#: Largest translation (pixels of the canonical image, each axis) searched by the verification.
RADIUS = 3
#: Zooms of the original searched by the verification: none and crops of about 3.5% and 7% resized back (a release
#: crops, never enlarges the canvas).
ZOOMS = (1.0, 1.035, 1.07)
#: Variants of an original searched by the verification of a query's best candidates, as (zoom, blur in canonical
#: pixels, sub-pixel move (dy, dx)): half-pixel moves (a crop or resize leaves the copy between pixels), a zoom (a
#: crop of up to ~7% resized back) and a blur.
VARIANTS = tuple((z, 0.0, (dy, dx)) for z in ZOOMS for dy in (0.0, 0.5) for dx in (0.0, 0.5)
                 if (z, dy, dx) != (1.0, 0.0, 0.0)) + ((1.0, 1.0, (0.0, 0.0)),)
#: How many of a query's best candidates (by the plain verification) are verified again over :data:`VARIANTS`.
REFINE = 3


#: RMS contrast (grey levels of 255, after the canonical blur) below which an image is *flat*: it has too little
#: structure to tell a copy from a look-alike (a sky or a black tile), so it is never flagged and never sets a
#: threshold; the audit counts such images.
FLAT = 1.0
#: RMS contrast (as :data:`FLAT`) from which an original has *structure*: a copy of it is expected to be found, and
#: the perturbation sweep edits only such originals. Below it (*weak* originals, between :data:`FLAT` and this) copies
#: are tested but not reliably found, and the audit says how many originals are weak. Measured on photo tiles
#: (docs/AUDIT.md, sweep): a JPEG q70 re-encode leaves about 0.8 grey levels of error on a tile of 2-4 levels of
#: contrast, which moves its copy 0.2-0.4 away in canonical distance, as far as the nearest look-alike tiles of the
#: same smooth region (a sky, a painted hull) lie; recall of the combined edit is 0.29 on weak tiles and 0.97 on
#: structured ones (with --aux). The gap to :data:`FLAT` is also a hysteresis: an edit that lowers contrast (brightness ×0.88, a
#: crop that cuts the structured corner away) leaves the copy of a structured original testable.
STRUCTURED = 4.0


@dataclass(frozen=True)
class Canonical:
    """Canonical images ``z (N, WORK, WORK)`` float32 (mean 0, RMS 1 each; a flat image is all 0), their
    retrieval thumbnails ``thumb (N, 256)`` float32 of unit norm, and ``rms (N,)`` float, the RMS contrast before
    standardising (grey levels of 255; :data:`FLAT`, :data:`STRUCTURED`)."""

    z: np.ndarray
    thumb: np.ndarray
    rms: np.ndarray

    @property
    def flat(self) -> np.ndarray:
        """``(N,)`` bool: too little structure to be tested (:data:`FLAT`)."""
        return self.rms < FLAT

    @property
    def structured(self) -> np.ndarray:
        """``(N,)`` bool: structure enough for a copy to be found (:data:`STRUCTURED`)."""
        return self.rms >= STRUCTURED


def _standardise(x: np.ndarray) -> np.ndarray:
    """Each of ``x (N, H, W)`` minus its mean over its RMS (a flat image becomes 0)."""
    x = x - x.mean((1, 2), keepdims=True)
    rms = np.sqrt((x ** 2).mean((1, 2), keepdims=True))
    return np.where(rms > 1e-3, x / np.maximum(rms, 1e-3), 0.0).astype(np.float32)


def canonical(images: np.ndarray) -> Canonical:
    """``images (N, S, S, 3)`` uint8 -> :class:`Canonical` (see the module docstring)."""
    import cv2

    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    small = np.stack([cv2.GaussianBlur(cv2.resize(a, (WORK, WORK), interpolation=cv2.INTER_AREA), (0, 0), BLUR)
                      for a in luma]) if len(luma) else np.zeros((0, WORK, WORK), np.float32)
    rms = np.sqrt(((small - small.mean((1, 2), keepdims=True)) ** 2).mean((1, 2))) if len(small) else np.zeros(0)
    return canonical_from_z(_standardise(small), rms)


def canonical_from_z(z: np.ndarray, rms: np.ndarray) -> Canonical:
    """:class:`Canonical` of already canonical images ``z (N, WORK, WORK)`` (their thumbnails recomputed)."""
    import cv2

    thumbs = np.stack([cv2.GaussianBlur(cv2.resize(a, (16, 16), interpolation=cv2.INTER_AREA), (0, 0), 1.0)
                       for a in z]) if len(z) else np.zeros((0, 16, 16), np.float32)
    return Canonical(z, np.ascontiguousarray(_standardise(thumbs).reshape(len(z), -1) / 16.0, dtype=np.float32),
                     np.asarray(rms, np.float64))


def _mirror(c: Canonical) -> Canonical:
    """The canonical images of the horizontally flipped images."""
    z = np.ascontiguousarray(c.z[:, :, ::-1])
    thumb = np.ascontiguousarray(c.thumb.reshape(-1, 16, 16)[:, :, ::-1].reshape(len(z), -1))
    return Canonical(z, thumb, c.rms)


#: Query shifts (canonical pixels) of the candidate search, each way on each axis: a copy moved by a few percent
#: still finds its original among the nearest thumbnails of one of them. ±3, not ±2: a crop taken from one corner
#: and a shift towards it add up to ~3-4 px, which ±2 left as far from the original as a look-alike (red-team,
#: tests/test_audit_redteam.py: digits 0.79 → 0.95 or more).
QUERY_SHIFTS = (-3, 0, 3)


#: Dimensions of the candidate search: the thumbnails' leading principal components, fitted on the originals.
CANDIDATE_DIMS = 64
#: Dimensions (the leading ones of :data:`CANDIDATE_DIMS`) of the search for the moved queries.
MOVED_DIMS = 32


def _projection(base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (D,), basis (D, d))``: the mean of ``base (M, D)`` and its :data:`CANDIDATE_DIMS` leading principal
    axes (all of them when ``base`` has fewer rows or columns)."""
    mean = base.mean(0, dtype=np.float64)
    centred = base - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return mean.astype(np.float32), np.ascontiguousarray(vectors[:, ::-1][:, :CANDIDATE_DIMS], dtype=np.float32)


def candidates(queries: Canonical, originals: Canonical, k: int,
               exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(query (P,), key (P,))``: the distinct (query, candidate) pairs to verify, ``key = 2 · original +
    mirrored``. Per query, the ``k`` nearest thumbnails (exact faiss L2) among the originals and their mirror images,
    and the ``k // 2`` nearest for each of its moves by :data:`QUERY_SHIFTS`. ``exclude_self``: the queries are the
    originals, and each one's own image and mirror are left out (leave-one-out)."""
    from privbench.audit.features import nearest

    n, q_n = len(originals.z), len(queries.z)
    base = np.concatenate([originals.thumb, _mirror(originals).thumb])
    own = 2 if exclude_self else 0
    kk = min(k, len(base) - own)
    if kk <= 0 or q_n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    mean, basis = _projection(base)
    base = (base - mean) @ basis
    coarse = np.ascontiguousarray(base[:, :MOVED_DIMS])
    found = []
    for dy in QUERY_SHIFTS:
        for dx in QUERY_SHIFTS:
            if dy == dx == 0:
                _, idx = nearest(base, (queries.thumb - mean) @ basis, kk + own, binary=False)
                k_here = kk
            else:  # the moved queries add their few nearest, on the leading axes
                moved = canonical_from_z(np.roll(queries.z, (dy, dx), axis=(1, 2)), queries.rms).thumb
                k_here = max(1, kk // 2)
                _, idx = nearest(coarse, (moved - mean) @ basis[:, :MOVED_DIMS], k_here + own, binary=False)
            if exclude_self:
                mine = (idx % n) == np.arange(q_n)[:, None]
                idx = np.take_along_axis(idx, np.argsort(mine, axis=1, kind="stable")[:, :k_here], 1)
            found.append(idx)
    idx = np.concatenate(found, 1)
    key = 2 * (idx % n) + (idx >= n)
    pairs = np.unique(np.arange(q_n)[:, None] * (2 * n) + key)
    return pairs // (2 * n), pairs % (2 * n)


def _variant(z: np.ndarray, zoom: float, blur: float, move: tuple[float, float]) -> np.ndarray:
    """Each canonical image of ``z (N, W, W)`` seen through a centred crop of ``1 / zoom`` of its side resized back
    to ``W`` and moved by ``move = (dy, dx)`` px (bilinear, edges replicated), then blurred by ``blur`` px,
    standardised again: what a crop, resize or blur does to an original."""
    import cv2
    import torch
    import torch.nn.functional as F

    w = z.shape[-1]
    x = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))[:, None]
    if (zoom, move) != (1.0, (0.0, 0.0)):
        # output pixel p samples the input at (p - c - move) / zoom + c, c the centre (align_corners coordinates)
        dy, dx = (2 * m / (w - 1) for m in move)
        theta = torch.tensor([[1 / zoom, 0.0, -dx / zoom], [0.0, 1 / zoom, -dy / zoom]], dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 1, w, w], align_corners=True).expand(len(x), w, w, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    x = x[:, 0]
    if blur:
        x = torch.from_numpy(np.stack([cv2.GaussianBlur(a, (0, 0), blur) for a in x.numpy()]))
    x = x - x.mean((1, 2), keepdim=True)
    rms = x.square().mean((1, 2), keepdim=True).sqrt()
    return torch.where(rms > 1e-3, x / rms.clamp_min(1e-3), torch.zeros(())).numpy()


def _windows(x: "torch.Tensor", side: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Sums of ``x (N, W, W)`` and of its square over every ``side``² window, ``(N, K, K)`` each with
    ``K = W - side + 1`` (separable running sums)."""
    import torch

    out = []
    for a in (x, x * x):
        r = a.cumsum(-1)
        r = torch.cat([r[..., side - 1:side], r[..., side:] - r[..., :-side]], -1)  # rows summed: (N, W, K)
        c = r.cumsum(-2)
        out.append(torch.cat([c[:, side - 1:side], c[:, side:] - c[:, :-side]], -2))
    return out[0], out[1]


def _partial_inverse(w: int, k: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(A (k, W), B (W // 2 + 1, k))`` complex64: ``Re(A @ X @ B)`` is the inverse real FFT of a half spectrum
    ``X (W, W // 2 + 1)`` at the ``k × k`` offsets ``0..k-1`` only (``irfft2(X)[:k, :k]``), two small matrix
    products instead of a whole inverse transform."""
    import math

    import torch

    m = torch.arange(k, dtype=torch.float64)
    a = torch.exp(2j * math.pi * torch.outer(m, torch.arange(w, dtype=torch.float64)) / w)
    v = torch.arange(w // 2 + 1, dtype=torch.float64)
    weight = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0  # the Nyquist column appears once in a full spectrum
    b = torch.exp(2j * math.pi * torch.outer(v, m) / w) * weight[:, None] / (w * w)
    return a.to(torch.complex64), b.to(torch.complex64)


def verify(queries: np.ndarray, originals: np.ndarray, qi: np.ndarray, oi: np.ndarray,
           chunk: int = 8192) -> np.ndarray:
    """``(P,)`` distance ``sqrt(2 (1 - rho))`` in [0, 2] between ``queries[qi]`` and ``originals[oi]`` (canonical
    ``(N, W, W)`` images, index arrays of the ``P`` pairs): ``rho`` is the largest normalised cross-correlation of
    the query's interior (its :data:`RADIUS`-pixel border left out) with the windows of the original moved by at
    most :data:`RADIUS` px on each axis. The border is left out because a shifted or cropped copy's border is not
    the original's content (a shift replicates edge rows, a crop cut them away): matching whole images, those rows
    alone cost a structured copy about 0.3 of distance (measured: median copy distance 0.19 -> 0.12 on photo tiles,
    combined edit). Unrelated images are about sqrt(2) apart; an image without structure in its interior is
    sqrt(2) from everything. Each image's spectrum is computed once; the correlations of all translations by one
    spectrum product per pair, inverted at those translations only (:func:`_partial_inverse`)."""
    import torch

    if not len(qi):
        return np.zeros(0)
    w, r = queries.shape[-1], RADIUS
    side = w - 2 * r
    t = torch.from_numpy(np.ascontiguousarray(queries[:, r:w - r, r:w - r], dtype=np.float32))
    t = t - t.mean((1, 2), keepdim=True)
    t_norm = t.flatten(1).norm(dim=1)
    t = t / t_norm.clamp_min(1e-6)[:, None, None]
    o = torch.from_numpy(np.ascontiguousarray(originals, dtype=np.float32))
    s1, s2 = _windows(o, side)  # (N, K, K)
    o_norm = (s2 - s1 * s1 / side ** 2).clamp_min(0).sqrt()
    spec_t, spec_o = torch.fft.rfft2(t, s=(w, w)).conj(), torch.fft.rfft2(o)  # circular at size W: no wrap
    inv_a, inv_b = _partial_inverse(w, 2 * r + 1)  # reaches the offsets <= 2r read
    qi_t, oi_t = torch.from_numpy(np.asarray(qi, np.int64)), torch.from_numpy(np.asarray(oi, np.int64))
    out = []
    for s in range(0, len(qi_t), chunk):
        a, b = qi_t[s:s + chunk], oi_t[s:s + chunk]
        cross = (inv_a @ (spec_o[b] * spec_t[a]) @ inv_b).real  # sum of t * o_window per offset (t has mean 0)
        norm = o_norm[b]
        rho = torch.where(norm > 1e-4, cross / norm.clamp_min(1e-4), torch.zeros(())).flatten(1).max(1).values
        rho = torch.where(t_norm[a] > 1e-6, rho, torch.zeros(()))
        out.append((2 * (1 - rho.clamp(-1, 1))).clamp_min(0).sqrt())
    return torch.cat(out).double().numpy()


def verify_whole(queries: np.ndarray, originals: np.ndarray, qi: np.ndarray, oi: np.ndarray) -> np.ndarray:
    """``(P,)`` RMS difference between ``queries[qi]`` and ``originals[oi]`` (canonical ``(N, W, W)`` whole images,
    index arrays of the ``P`` pairs), minimised over the translations of at most :data:`RADIUS` px (edges
    replicated); each image's spectrum is computed once. In [0, 2] like :func:`verify`, and the better of the two
    when the copy kept its border (noise, a re-encode, a colour change: every pixel is evidence)."""
    import torch

    from privbench.metrics.registration import shift_errors

    if not len(qi):
        return np.zeros(0)
    uq, qi = np.unique(qi, return_inverse=True)  # the spectra of the images in a pair only
    uo, oi = np.unique(oi, return_inverse=True)
    q = torch.from_numpy(np.ascontiguousarray(queries[uq], dtype=np.float32))[:, None]
    o = torch.from_numpy(np.ascontiguousarray(originals[uo], dtype=np.float32))[:, None]
    # replicated edges only: a pipeline that shifts fills the border, it does not wrap the image around
    err = shift_errors(o, q, RADIUS, pairs=(torch.from_numpy(oi), torch.from_numpy(qi)), wrap=False).flatten(1)
    return (err.min(1).values / q[0].numel()).sqrt().double().numpy()


def copy_distances(queries: Canonical, originals: Canonical, k: int = 4,
                   exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(distances (Q, 2), index (Q, 2))``: per query, the two smallest verified distances to distinct originals,
    ascending (``inf`` and -1 where there are fewer; both ``inf`` for a flat query, :data:`FLAT`). Every candidate
    pair of :func:`candidates` is verified as it is (:func:`verify`); each query's :data:`REFINE` best are verified
    again against the variants of the original (:data:`VARIANTS`) and as whole images (:func:`verify_whole`),
    keeping the smallest distance."""
    q_n, n = len(queries.z), len(originals.z)
    dist = np.full((q_n, 2), np.inf)
    best = np.full((q_n, 2), -1, np.int64)
    q, key = candidates(queries, originals, k, exclude_self)
    if not len(q):
        return dist, best
    views = np.stack([originals.z, _mirror(originals).z], 1).reshape(2 * n, *originals.z.shape[1:])  # by key
    d = verify(queries.z, views, q, key)
    # the REFINE best pairs of each query (pairs are sorted by query)
    order = np.lexsort((d, q))
    rank = np.arange(len(q)) - np.searchsorted(q[order], q[order])
    top = order[rank < REFINE]
    uk = np.unique(key[top])
    where = np.searchsorted(uk, key[top])
    for zoom, blur, move in VARIANTS:
        d[top] = np.minimum(d[top], verify(queries.z, _variant(views[uk], zoom, blur, move), q[top], where))
    d[top] = np.minimum(d[top], verify_whole(queries.z, views, q[top], key[top]))
    # per query: the closest original, then the closest other original (a mirror is the same original)
    orig = key // 2
    order = np.lexsort((d, q))
    qs, ds, os_ = q[order], d[order], orig[order]
    start = np.searchsorted(qs, np.arange(q_n))
    has = start < len(qs)
    has[has] = qs[start[has]] == np.flatnonzero(has)
    rows = np.flatnonzero(has)
    dist[rows, 0], best[rows, 0] = ds[start[rows]], os_[start[rows]]
    other = (os_ != best[qs, 0])
    o_idx = np.flatnonzero(other)
    first_other = np.full(q_n, len(qs))
    np.minimum.at(first_other, qs[o_idx], o_idx)  # the first (closest) other original of each query
    ok = first_other < len(qs)
    dist[ok, 1], best[ok, 1] = ds[first_other[ok]], os_[first_other[ok]]
    dist[queries.flat] = np.inf  # no structure to compare: neither a copy nor evidence for a threshold
    return dist, best
