"""Central metrics: every defense is scored the same way (docs/DESIGN.md, Scores).

Reconstruction metrics take ``x, y (N,C,H,W)`` in [0,1] and return per-sample values ``(N,)``; they are
registered in :data:`METRICS` with their direction (higher = more similar for all but GMSD/LPIPS).
"""

from __future__ import annotations

from privbench.core.registry import METRICS
from privbench.metrics.bitrate import bits_per_pixel
from privbench.metrics.cost import CostMeter
from privbench.metrics.identity import linkage_scores
from privbench.metrics.image import (
    MetricSpec,
    edge_psnr,
    lpips_status,
    masked_psnr,
    masked_ssim,
    psnr,
    reconstruction_metrics,
    ssim,
)
from privbench.metrics.membership import membership_scores

__all__ = ["METRICS", "MetricSpec", "psnr", "ssim", "edge_psnr", "masked_psnr", "masked_ssim", "lpips_status",
           "reconstruction_metrics", "linkage_scores", "membership_scores", "bits_per_pixel", "CostMeter"]
