"""Identity privacy: re-identification (linkage) of released samples against a gallery of originals."""

from __future__ import annotations

import torch
from torch import Tensor


def linkage_scores(rankings: Tensor, truth: Tensor, gallery_size: int) -> dict[str, float]:
    """Re-identification / linkage scores of ``rankings (N, K)`` (gallery indices, best first).

    ``truth`` is either ``(N,)``, the one gallery index that is each query's original, or ``(N, G)`` bool, which
    gallery items share the query's identity (person re-identification; several can be right).

    Returns ``top1`` (rank-1), ``top5`` (rank-5), their chance levels (random ranking; ``1/G`` and ``min(5,G)/G``
    with one right item), ``top1_over_chance``, ``top1_pvalue`` (one-sided binomial test of the rank-1 hits at the
    mean chance level), and, when the rankings cover the whole gallery, ``map`` (mean average precision) with its
    exact chance level ``chance_map``.
    """
    from math import comb

    from scipy.stats import binomtest

    if rankings.ndim != 2 or rankings.shape[0] != truth.shape[0]:
        raise ValueError(f"rankings {tuple(rankings.shape)} do not match truth {tuple(truth.shape)}")
    if truth.ndim == 1:
        relevance = torch.zeros(len(truth), gallery_size, dtype=torch.bool)
        relevance[torch.arange(len(truth)), truth] = True
    else:
        relevance = truth.bool()
        if relevance.shape[1] != gallery_size:
            raise ValueError(f"relevance {tuple(relevance.shape)} does not match a gallery of {gallery_size}")
    if not bool(relevance.any(1).all()):
        raise ValueError("every query needs at least one right gallery item")
    hits = relevance.gather(1, rankings.long())
    r = relevance.sum(1).double()  # right items per query
    g = float(gallery_size)
    top1 = float(hits[:, :1].any(1).float().mean())
    top5 = float(hits[:, :5].any(1).float().mean())
    k = min(5, gallery_size)
    if truth.ndim == 1:  # one right item: exactly 1/G and k/G
        chance1, chance5 = 1.0 / gallery_size, k / gallery_size
    else:  # r right items: r/G, and 1 - C(G-r, k)/C(G, k) (no right item among the first k), in exact integers
        counts = [int(v) for v in relevance.sum(1).tolist()]
        chance1 = sum(counts) / (len(counts) * gallery_size)
        chance5 = sum(1 - comb(gallery_size - c, k) / comb(gallery_size, k) for c in counts) / len(counts)
    n_hits = int(hits[:, :1].any(1).sum())
    pvalue = binomtest(n_hits, len(truth), min(chance1, 1.0), alternative="greater").pvalue
    out = {"top1": top1, "top5": top5, "chance_top1": chance1, "chance_top5": chance5,
           "top1_over_chance": top1 / chance1, "top1_pvalue": float(pvalue)}
    if rankings.shape[1] == gallery_size:
        ranks = torch.arange(1, gallery_size + 1, dtype=torch.float64)
        precision = hits.double().cumsum(1) / ranks
        out["map"] = float(((precision * hits).sum(1) / r).mean())
        harmonic = float((1.0 / ranks).sum())
        # E[AP] of a random ranking with r of G right: H_G / G + (r - 1)(G - H_G) / (G (G - 1))
        chance_ap = harmonic / g + (r - 1) * (g - harmonic) / (g * max(g - 1, 1))
        out["chance_map"] = float(chance_ap.mean())
    return out
