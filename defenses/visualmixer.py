"""VisualMixer (Li et al., "VisualMixer: Privacy-preserving image classification via pixel shuffling",
arXiv 2404.04098): a noise-free, task-agnostic obfuscation that shuffles pixels spatially and across colour
channels inside regions chosen per image to reach a target Visual Feature Entropy (VFE).

privbench's assumptions (docs/METHODS.md): VFE v1 (:mod:`privbench.metrics.vfe`); the target is VFE v1 relative
to its maximum for the image shape; region sizes are the common divisors (≥ 2) of height and width; for each image
the smallest region size whose full shuffle reaches the target is used, and the fewest regions (in a secret, keyed
random order) are shuffled so that the target is reached. ST-Adam is implemented as Adam on a smoothed first
moment (see :class:`STAdam`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from privbench.core.contracts import RunContext
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Splits, Surface, check_images
from privbench.core.registry import DEFENSES
from privbench.core.release import Release, ReleaseMeta
from privbench.core.threats import ThreatModel
from privbench.defenses.base import InputDefense
from privbench.metrics.vfe import normalized_vfe, visual_feature_entropy
from privbench.ops.regions import from_blocks, region_sizes, to_blocks


def shuffle_regions(x: Tensor, s: int, selected: Tensor, keys: Tensor) -> Tensor:
    """Permute the values of each selected s×s region (all channels jointly) by ``keys``.

    Args:
        x: ``(N,C,H,W)`` images. selected: ``(N, n_blocks)`` bool. keys: ``(N, n_blocks, C·s·s)`` permutations.
    Returns: images of the same shape; every region keeps its multiset of values exactly.
    """
    blocks = to_blocks(x, s)
    mixed = torch.where(selected.unsqueeze(-1), blocks.gather(-1, keys), blocks)
    return from_blocks(mixed, x.shape, s)


@DEFENSES.register("visualmixer")
class VisualMixer(InputDefense):
    """VisualMixer pixel shuffling to a target Visual Feature Entropy (Li et al., arXiv 2404.04098)."""

    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER})
    strength: ClassVar[str] = "target_vfe"
    surfaces = frozenset({Surface.DATA, Surface.TRANSFORM})

    @dataclass(frozen=True)
    class Params:
        target_vfe: float = 0.5
        optimizer: str = "adam"

        def __post_init__(self) -> None:
            if not 0.0 < self.target_vfe <= 1.0:
                raise InputError(f"target_vfe is VFE v1 relative to its maximum and must lie in (0, 1], "
                                 f"got {self.target_vfe}")
            if self.optimizer not in ("adam", "st-adam"):
                raise InputError(f"optimizer must be 'adam' or 'st-adam', got {self.optimizer!r}")

    def apply(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return self.mix(images, generator)[0]

    def public_info(self, shape: tuple[int, int, int]) -> dict[str, Any]:
        """The public region structure: the candidate region sides for images of ``shape`` (C, H, W)."""
        return {"region_sides": region_sizes(shape[1], shape[2])}

    def mix(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Shuffle ``x (N,C,H,W)`` to the target. Returns ``(mixed, region side per image, reached per image)``."""
        n, c, h, w = x.shape
        sizes = region_sizes(h, w)
        if not sizes:
            raise InputError(f"visualmixer: images of {h}×{w} px have no region size ≥ 2 that tiles them")
        target = self.params.target_vfe
        plans = []
        for s in sizes:
            nb = (h // s) * (w // s)
            keys = torch.rand(n, nb, c * s * s, generator=generator).argsort(-1)
            rank = torch.rand(n, nb, generator=generator).argsort(-1).argsort(-1)  # secret region order
            full = normalized_vfe(shuffle_regions(x, s, torch.ones(n, nb, dtype=torch.bool), keys))
            plans.append((s, nb, keys, rank, full))
        fulls = torch.stack([p[4] for p in plans], 1)  # (N, n_sizes)
        if float(fulls.max()) < target:
            lo = float(normalized_vfe(x).min())
            raise InputError(f"visualmixer.target_vfe={target} is outside the reachable range "
                             f"[{lo:.3f}, {float(fulls.max()):.3f}] for images of shape {(c, h, w)}")
        reach = fulls >= target
        choice = torch.where(reach.any(1), reach.float().argmax(1), fulls.argmax(1))
        out = x.clone()
        side = torch.empty(n, dtype=torch.int64)
        for j, (s, nb, keys, rank, _) in enumerate(plans):
            rows = torch.nonzero(choice == j).flatten()
            if len(rows) == 0:
                continue
            xr, kr, rr = x[rows], keys[rows], rank[rows]
            lo_k = torch.zeros(len(rows), dtype=torch.int64)
            hi_k = torch.full((len(rows),), nb, dtype=torch.int64)
            while bool((lo_k < hi_k).any()):  # smallest k with VFE(shuffle first k regions) >= target
                mid = (lo_k + hi_k) // 2
                v = normalized_vfe(shuffle_regions(xr, s, rr < mid.unsqueeze(1), kr))
                ok = v >= target
                hi_k = torch.where(ok & (lo_k < hi_k), mid, hi_k)
                lo_k = torch.where(~ok & (lo_k < hi_k), mid + 1, lo_k)
            out[rows] = shuffle_regions(xr, s, rr < hi_k.unsqueeze(1), kr)
            side[rows] = s
        reached = normalized_vfe(out) >= target - 1e-6
        return out, side, reached

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        check_images(splits.private.images, "visualmixer input")
        mixed, side, reached = self.mix(splits.private.images, ctx.generator("release"))
        extra = {"vfe_original_mean": float(visual_feature_entropy(splits.private.images).mean()),
                 "vfe_reached_fraction": float(reached.float().mean()),
                 "region_side_mean": float(side.float().mean())}
        return Release(data=ImageSet(mixed, splits.private.labels.clone()), transform=self.transform,
                       inference_transform=self.transform, meta=ReleaseMeta(extra=extra))

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        return STAdam(params, lr=lr) if self.params.optimizer == "st-adam" else torch.optim.Adam(params, lr=lr)


class STAdam(torch.optim.Optimizer):
    """ST-Adam as privbench implements it (**assumption**; the paper's update rule was not retrievable).

    VisualMixer proposes ST-Adam to damp the gradient oscillation that shuffled inputs cause. Here: Adam whose
    first moment is smoothed once more, ``s_t = β3·s_{t-1} + (1−β3)·m_t``, and the step uses the bias-corrected
    ``s_t`` in place of ``m_t`` (a second-order moving average of the gradient trend).
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float, float] = (0.9, 0.999, 0.9),
                 eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2, b3 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["t"] = 0
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                    st["s"] = torch.zeros_like(p)
                st["t"] += 1
                t = st["t"]
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                st["s"].mul_(b3).add_(st["m"], alpha=1 - b3)
                # For a constant gradient g: m_t = (1 − β1^t)·g and s_t = c_t·g with
                # c_t = (1 − β3^t) − (1 − β3)·Σ_{j≤t} β3^(t−j)·β1^j; divide by c_t to unbias.
                geo = (b1 * (b3 ** t - b1 ** t) / (b3 - b1)) if b3 != b1 else t * b1 ** t
                s_hat = st["s"] / ((1 - b3 ** t) - (1 - b3) * geo)
                v_hat = st["v"] / (1 - b2 ** t)
                p.addcdiv_(s_hat, v_hat.sqrt().add_(group["eps"]), value=-group["lr"])
        return loss
