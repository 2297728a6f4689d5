"""Central scoring (docs/DESIGN.md, Scores): what an attack's output is compared with, and the privacy metrics.

Pure functions of the attack output and the runner-side ground truth (targets' originals, gallery truth,
membership truth); no attack code runs here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import torch

from .contracts import AttackOutput, GradientOracle, ImageSet, Release, Splits
from .metrics import linkage_scores, membership_scores, reconstruction_metrics
from .seeding import derive_seed


def membership_candidates(splits: Splits, seed: int) -> tuple[ImageSet, torch.Tensor]:
    """Members = the targets' private originals; non-members = as many test images (never trained on), shuffled.

    Returns ``(candidates, is_member (M,) bool)``; the ground truth stays with the runner.
    """
    n = min(len(splits.targets), len(splits.test))
    members = splits.private.subset(splits.targets[:n])
    images = torch.cat([members.images, splits.test.images[:n]])
    labels = torch.cat([members.labels, splits.test.labels[:n]])
    truth = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    perm = torch.randperm(2 * n, generator=torch.Generator().manual_seed(derive_seed(seed, "candidates")))
    return ImageSet(images[perm], labels[perm]), truth[perm]



def reference_originals(out: AttackOutput, splits: Splits, oracle: Optional[GradientOracle]
                        ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """What reconstructions are scored against, and the reconstructions in matching order.

    - default: the private originals of ``view.targets``;
    - ``sources`` on a private training set: those private samples;
    - ``sources`` on a non-private training set (synthetic): the nearest private original of the source's class;
    - ``class_labels``: the nearest private original (pixel MSE) of that class.
    Within ``groups`` reconstructions are re-ordered to their originals by minimum total MSE (Hungarian).
    Returns ``(originals (N,C,H,W), reordered reconstructions or None)``.
    """
    rec = out.reconstructions
    assert rec is not None
    labels = out.class_labels
    if out.sources is not None:
        if oracle is None:
            raise ValueError("attack returned sources but the release has no gradient oracle")
        if oracle.on_private:
            originals = splits.private.images[out.sources]
        else:
            labels = oracle.training_set.labels[out.sources]
    elif labels is None:
        originals = splits.private.images[splits.targets]
    if out.groups is not None and labels is None:
        from scipy.optimize import linear_sum_assignment

        order = torch.arange(len(rec))
        for g in torch.unique(out.groups):
            idx = torch.nonzero(out.groups == g).flatten()
            cost = ((rec[idx].unsqueeze(1) - originals[idx].unsqueeze(0)) ** 2).flatten(2).mean(2)
            r, c = linear_sum_assignment(cost.detach().cpu().double().numpy())
            order[idx[torch.as_tensor(c)]] = idx[torch.as_tensor(r)]
        return originals, rec[order]
    if labels is not None:
        originals = torch.empty_like(rec)
        for c in torch.unique(labels):
            pool = splits.private.images[splits.private.labels == c]
            at = torch.nonzero(labels == c).flatten()
            if len(pool) == 0:
                raise ValueError(f"no private original of class {int(c)}")
            d = torch.cdist(rec[at].flatten(1).float().cpu(), pool.flatten(1))
            originals[at] = pool[d.argmin(1)]
    return originals, None



def release_vfe(release: Release, splits: Splits) -> dict[str, float]:
    """VFE v1 (:mod:`benchmark.metrics.vfe`) of the released targets, for every defense that releases images."""
    from .metrics.vfe import VFE_VERSION, normalized_vfe, visual_feature_entropy

    if release.data is None or release.data.images.shape[1:] != splits.private.images.shape[1:]:
        return {}
    x = release.data.images[splits.targets]
    return {"vfe": float(visual_feature_entropy(x).mean()), "vfe_normalized": float(normalized_vfe(x).mean()),
            "vfe_version": float(VFE_VERSION)}



#: A reconstruction whose SSIM to its original reaches this is counted as memorised / recovered.
MEMORIZATION_SSIM = 0.9


def aligned_reconstructions(out: AttackOutput, splits: Splits, oracle: Optional[GradientOracle]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(reconstructions, originals)`` on the CPU, in matching order (see :func:`reference_originals`)."""
    assert out.reconstructions is not None
    rec = out.reconstructions.detach().cpu().float()
    originals, reordered = reference_originals(dataclasses.replace(out, reconstructions=rec), splits, oracle)
    return (rec if reordered is None else reordered), originals


def score(out: AttackOutput, splits: Splits, truth: Optional[torch.Tensor], use_lpips: bool = True,
          mask: Optional[torch.Tensor] = None, is_member: Optional[torch.Tensor] = None,
          oracle: Optional[GradientOracle] = None,
          aligned: Optional[tuple[torch.Tensor, torch.Tensor]] = None
          ) -> tuple[dict[str, Any], dict[str, str], float]:
    """Central scoring of an attack's output. Returns ``(privacy metrics, notes, leakage in [0, 1])``.

    ``mask`` ``(N_targets, 1, H, W)`` marks the sensitive (removed) region; fidelity inside it is reported as
    ``masked-psnr`` / ``masked-ssim``. Reconstructions are compared with :func:`reference_originals` (``aligned``:
    the result of :func:`aligned_reconstructions`, when the caller already has it); the share
    with SSIM >= ``MEMORIZATION_SSIM`` is ``memorized_rate``; reconstructions of a non-private training set are
    also compared with what was actually trained on (``training_*``). Leakage is the attack's success on a common
    scale (1 = fully leaky): SSIM of reconstructions (clipped at 0); linkage advantage over chance
    ``(top1 - c) / (1 - c)``; membership advantage ``2 * (AUC - 0.5)`` (best method, clipped at 0).
    """
    privacy: dict[str, Any] = {}
    notes: dict[str, str] = {}
    leaks: list[float] = []
    if out.reconstructions is not None:
        rec, originals = aligned if aligned is not None else aligned_reconstructions(out, splits, oracle)
        if tuple(rec.shape) != tuple(originals.shape):
            raise ValueError(f"attack returned reconstructions {tuple(rec.shape)}, expected {tuple(originals.shape)}")
        if out.sources is None and out.class_labels is None and len(rec) != len(splits.targets):
            raise ValueError(f"attack returned {len(rec)} reconstructions for {len(splits.targets)} targets")
        values, missing = reconstruction_metrics(rec, originals, mask=mask, use_lpips=use_lpips)
        privacy.update(values)
        notes.update({f"unavailable.{k}": v for k, v in missing.items()})
        if min(rec.shape[-2:]) >= 3:
            from .metrics.image import ssim

            privacy["memorized_rate"] = float((ssim(rec, originals) >= MEMORIZATION_SSIM).float().mean())
        if out.sources is not None and oracle is not None and not oracle.on_private:
            trained = oracle.training_set.images[out.sources]
            from .metrics.image import psnr, ssim

            privacy["training_psnr"] = float(psnr(rec, trained).mean())
            privacy["training_ssim"] = float(ssim(rec, trained).mean())
        leaks.append(max(0.0, float(values["ssim"])))
    if out.rankings is not None:
        if truth is None:
            raise ValueError("attack returned rankings but did not declare needs_gallery")
        best = None
        for method, ranking in sorted(out.rankings.items()):
            s = linkage_scores(ranking, truth, len(splits.private))
            privacy.update({f"{method}_{k}": v for k, v in s.items() if k in ("top1", "top5", "top1_pvalue")})
            if best is None or s["top1"] > best["top1"]:
                best = s
        assert best is not None
        privacy.update(best)
        c = best["chance_top1"]
        leaks.append(max(0.0, (best["top1"] - c) / (1 - c)))
    if out.membership_scores is not None:
        if is_member is None:
            raise ValueError("attack returned membership scores but did not declare needs_candidates")
        best_auc = None
        for method, scores in sorted(out.membership_scores.items()):
            if tuple(scores.shape) != tuple(is_member.shape) or not bool(torch.isfinite(scores).all()):
                raise ValueError(f"membership scores {method!r}: expected {len(is_member)} finite values")
            m = membership_scores(scores.detach().cpu(), is_member)
            privacy.update({f"{method}_{k}": v for k, v in m.items()})
            if best_auc is None or m["auc"] > best_auc["auc"]:
                best_auc = m
        assert best_auc is not None
        privacy.update({f"membership_{k}": v for k, v in best_auc.items()})
        leaks.append(max(0.0, 2 * (best_auc["auc"] - 0.5)))
    privacy.update({f"attack_{k}": float(v) for k, v in out.extra.items()})
    if not leaks:
        raise ValueError("attack returned nothing to score")
    return privacy, notes, max(leaks)



def sample_arrays(splits: Splits, release: Release, recon: torch.Tensor, originals: torch.Tensor, aligned: bool,
                  n: int = 8) -> dict[str, np.ndarray]:
    """The first ``n`` original / released / reconstructed images as uint8 arrays (for the reconstruction grids).
    ``released`` is black unless the reconstructions are aligned with the targets and the release holds their
    images."""
    idx = splits.targets[:n]
    k = min(n, len(recon))
    if aligned and release.data is not None:
        rel = release.data.images[idx][:k]
    else:
        rel = torch.zeros_like(originals[:k])
    if rel.shape[1:] != originals.shape[1:]:
        rel = torch.nn.functional.interpolate(rel, size=originals.shape[-2:], mode="nearest")
    arrays = {"original": originals[:k], "released": rel, "reconstructed": recon[:k]}
    return {key: (v.clamp(0, 1) * 255).round().to(torch.uint8).numpy() for key, v in arrays.items()}


def gallery_permutation(splits: Splits, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gallery (G,C,H,W), truth (N_targets,))``: the private originals shuffled (runner-side seed), and the
    gallery index of each target's original."""
    perm = torch.randperm(len(splits.private), generator=torch.Generator().manual_seed(derive_seed(seed, "gallery")))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    return splits.private.images[perm], inverse[splits.targets]
