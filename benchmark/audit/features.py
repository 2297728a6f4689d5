"""Feature spaces of the linkage risk (near-copy uses :mod:`.copies`), and exact nearest-neighbour search with
faiss.

- ``pixels``: the RGB image area-averaged to 16×16 and Gaussian-blurred (σ = 1 cell), in [0, 1], scaled so the L2
  distance is the RMS difference of the thumbnails: robust to re-encoding and shifts of a few pixels.
- ``phash``: the 64-bit perceptual hash of imagehash (Zauner 2010: the low-frequency DCT signs), compared by
  Hamming distance.
- ``colour``: an 8×8×8 RGB histogram, L1-normalised, compared by L2 distance (for linkage; layout-free).

Search is exact (``IndexFlatL2`` / ``IndexBinaryFlat``): 10,000 × 10,000 comparisons take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Space:
    """A feature space: ``extract(images (N,S,S,3) uint8) -> features`` and whether they are binary codes."""

    name: str
    extract: Callable[[np.ndarray], np.ndarray]
    binary: bool = False


def pixel_features(images: np.ndarray, side: int = 16) -> np.ndarray:
    """``(N, side² · 3)`` float32: blurred RGB thumbnails in [0, 1] / sqrt(dim) (L2 distance = RMS difference)."""
    import cv2
    from scipy.ndimage import gaussian_filter

    small = np.stack([cv2.resize(a, (side, side), interpolation=cv2.INTER_AREA) for a in images]).astype(np.float32)
    small = gaussian_filter(small / 255.0, sigma=(0, 1.0, 1.0, 0), mode="nearest").reshape(len(images), -1)
    return (small / np.sqrt(small.shape[1])).astype(np.float32)


def phash_features(images: np.ndarray) -> np.ndarray:
    """``(N, 8)`` uint8: each image's 64-bit pHash, packed."""
    import imagehash
    from PIL import Image

    return np.stack([np.packbits(imagehash.phash(Image.fromarray(a)).hash.flatten()) for a in images])


def colour_features(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """``(N, bins³)`` float32 RGB histograms summing to 1."""
    q = (images.astype(np.int64) * bins) // 256
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    n = len(images)
    hist = np.zeros((n, bins ** 3), dtype=np.float32)
    np.add.at(hist, (np.repeat(np.arange(n), codes[0].size), codes.reshape(n, -1).ravel()), 1.0)
    return hist / codes[0].size


SPACES = {"pixels": Space("pixels", pixel_features), "phash": Space("phash", phash_features, binary=True),
          "colour": Space("colour", colour_features)}


def nearest(base: np.ndarray, queries: np.ndarray, k: int, binary: bool,
            exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest ``base`` rows of each query: ``(distances (Q, k), indices (Q, k))``, exact; distances are
    Euclidean (float features) or Hamming (binary codes). ``exclude_self``: queries are ``base`` itself, and each
    row's own index is left out (leave-one-out)."""
    import faiss

    extra = 1 if exclude_self else 0
    kk = min(k + extra, len(base))
    if binary:
        index = faiss.IndexBinaryFlat(base.shape[1] * 8)
        index.add(np.ascontiguousarray(base, dtype=np.uint8))
        dist, idx = index.search(np.ascontiguousarray(queries, dtype=np.uint8), kk)
        dist = dist.astype(np.float64)
    else:
        index = faiss.IndexFlatL2(base.shape[1])
        index.add(np.ascontiguousarray(base, dtype=np.float32))
        dist, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), kk)
        dist = np.sqrt(np.maximum(dist.astype(np.float64), 0.0))
    if exclude_self:
        keep = idx != np.arange(len(queries))[:, None]
        # drop the query's own entry (or, if ties pushed it out, the last column) from every row
        order = np.argsort(~keep, axis=1, kind="stable")[:, :kk - 1]
        dist, idx = np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)
    pad = k - idx.shape[1]
    if pad > 0:  # fewer base rows than k: missing neighbours are infinitely far
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
    return dist[:, :k], idx[:, :k]
