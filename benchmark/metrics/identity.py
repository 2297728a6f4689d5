"""Identity privacy: re-identification (linkage) of released samples against a gallery of originals."""

from __future__ import annotations

import torch
from torch import Tensor


def linkage_scores(rankings: Tensor, truth: Tensor, gallery_size: int) -> dict[str, float]:
    """Top-1 / top-5 accuracy of ``rankings (N, K)`` (gallery indices, best first) against ``truth (N,)``.

    Returns ``top1``, ``top5``, the chance levels ``1/G`` and ``min(5,G)/G``, ``top1_over_chance`` and
    ``top1_pvalue``: the one-sided binomial p-value of the top-1 hit count under chance (small = real linkage).
    """
    from scipy.stats import binomtest

    if rankings.ndim != 2 or rankings.shape[0] != truth.shape[0]:
        raise ValueError(f"rankings {tuple(rankings.shape)} do not match truth {tuple(truth.shape)}")
    hits = rankings == truth.view(-1, 1)
    top1 = float(hits[:, :1].any(1).float().mean())
    top5 = float(hits[:, :5].any(1).float().mean())
    chance1 = 1.0 / gallery_size
    n_hits = int(hits[:, :1].any(1).sum())
    pvalue = binomtest(n_hits, len(truth), chance1, alternative="greater").pvalue
    return {"top1": top1, "top5": top5, "chance_top1": chance1, "chance_top5": min(5, gallery_size) / gallery_size,
            "top1_over_chance": top1 / chance1, "top1_pvalue": float(pvalue)}


def rank_by_distance(queries: Tensor, gallery: Tensor, k: int = 5) -> Tensor:
    """Nearest-neighbour ranking by Euclidean distance: ``queries (N,D)``, ``gallery (G,D)`` -> ``(N, k)``."""
    d = torch.cdist(queries.flatten(1).double(), gallery.flatten(1).double())
    return d.topk(min(k, gallery.shape[0]), dim=1, largest=False).indices
