"""Central scoring (docs/DESIGN.md, Scores): what an attack's output is compared with, and the privacy metrics.

Pure functions of the attack output and the runner-side ground truth (targets' originals, gallery truth,
membership truth); no attack code runs here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional

import numpy as np
import torch

from privbench.core.calibration import Units
from privbench.core.contracts import AttackOutput
from privbench.core.images import ImageSet, Splits
from privbench.core.release import GradientOracle, Release
from privbench.core.seeding import derive_seed
from privbench.metrics import linkage_scores, membership_scores, psnr, reconstruction_metrics, ssim
from privbench.metrics.registration import REGISTRATION_RADIUS, nearest_index, register


def membership_candidates(splits: Splits, seed: int) -> tuple[ImageSet, torch.Tensor]:
    """Members = the targets' private originals; non-members = as many test images (never trained on), shuffled
    (clips keep their person masks and keypoints, not their identities).

    Returns ``(candidates, is_member (M,) bool)``; the ground truth stays with the runner.
    """
    n = min(len(splits.targets), len(splits.test))
    members = splits.private.subset(splits.targets[:n])
    held_out = splits.test.subset(torch.arange(n))

    def both(field: str) -> Optional[torch.Tensor]:
        a, b = getattr(members, field), getattr(held_out, field)
        return None if a is None or b is None else torch.cat([a, b])

    truth = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    perm = torch.randperm(2 * n, generator=torch.Generator().manual_seed(derive_seed(seed, "candidates")))
    # identities are withheld; person masks and keypoints stay (the attacker holds the candidate clips)
    annotations = [None if t is None else t[perm] for t in (both("masks"), both("keypoints"))]
    return ImageSet(both("images")[perm], both("labels")[perm], None, *annotations), truth[perm]



@dataclasses.dataclass(frozen=True)
class Aligned:
    """Reconstructions ``rec (N,C,H,W)`` and what they are scored against, in matching order, on the CPU.

    ``control``: when the pairing itself uses the ground truth (best match within a class, Hungarian matching of a
    batch, the nearest released image to each original), the same procedure applied to held-out non-members:
    ``(x, y)`` pairs whose SSIM is the ``best-match-ssim`` prior (:mod:`privbench.core.calibration`). ``None`` when
    reconstructions are aligned with their own originals (the prior is then the aux mean image).
    """

    rec: torch.Tensor
    originals: torch.Tensor
    control: Optional[tuple[torch.Tensor, torch.Tensor]] = None


def _closest(rec: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """For each of ``rec (n,C,H,W)``, the image of ``pool (k,C,H,W)`` closest in pixel L2 over translations of up to
    ``REGISTRATION_RADIUS`` px (:func:`~privbench.metrics.registration.nearest_index`), as every score registers."""
    return pool[nearest_index(rec, pool)]


def best_match(rec: torch.Tensor, labels: torch.Tensor, splits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """``(originals, controls)``: for each reconstruction of class ``labels[i]``, the closest (shift-tolerant L2) of ``k``
    private images of that class, and the closest of ``k`` held-out test images of that class (never trained on),
    with ``k`` the smaller of the two class pools, so that the member and control statistics draw on equally
    many candidates."""
    originals, controls = torch.empty_like(rec), torch.empty_like(rec)
    for c in torch.unique(labels):
        members = splits.private.images[splits.private.labels == c]
        held_out = splits.test.images[splits.test.labels == c]
        k = min(len(members), len(held_out))
        if k == 0:
            raise ValueError(f"class {int(c)}: no private or no held-out image to compare with")
        at = torch.nonzero(labels == c).flatten()
        originals[at] = _closest(rec[at], members[:k])
        controls[at] = _closest(rec[at], held_out[:k])
    return originals, controls


def aligned_reconstructions(out: AttackOutput, splits: Splits, oracle: Optional[GradientOracle]) -> Aligned:
    """What reconstructions are scored against, and the reconstructions in matching order:

    - default: the private originals of ``view.targets``;
    - ``sources`` on a private training set: those private samples;
    - ``sources`` on a non-private training set (synthetic), or ``class_labels``: best match within the class
      (:func:`best_match`, with its held-out control).

    Within ``groups`` reconstructions are re-ordered to their originals by minimum total MSE (Hungarian).
    """
    assert out.reconstructions is not None
    rec = out.reconstructions.detach().cpu().float()
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
    if labels is not None:
        originals, controls = best_match(rec, labels, splits)
        return Aligned(rec, originals, (rec, controls))
    if tuple(rec.shape) != tuple(originals.shape):
        raise ValueError(f"attack returned reconstructions {tuple(rec.shape)}, expected {tuple(originals.shape)}")
    if out.groups is not None:
        if len(splits.test) < len(rec):
            raise ValueError(f"{len(rec)} batch reconstructions need as many held-out test images for the control")
        held_out = splits.test.images[: len(rec)]
        return Aligned(rec[_hungarian(rec, originals, out.groups)], originals,
                       (rec[_hungarian(rec, held_out, out.groups)], held_out))
    return Aligned(rec, originals)


def _hungarian(rec: torch.Tensor, refs: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """The order of ``rec`` that matches each group's reconstructions to its ``refs`` by minimum total MSE."""
    from scipy.optimize import linear_sum_assignment

    order = torch.arange(len(rec))
    for g in torch.unique(groups):
        idx = torch.nonzero(groups == g).flatten()
        cost = ((rec[idx].unsqueeze(1) - refs[idx].unsqueeze(0)) ** 2).flatten(2).mean(2)
        r, c = linear_sum_assignment(cost.double().numpy())
        order[idx[torch.as_tensor(c)]] = idx[torch.as_tensor(r)]
    return order


def nearest_released(release: Release, images: torch.Tensor) -> torch.Tensor:
    """For each of ``images (n,C,H,W)``, the closest (pixel L2) image of the released or synthetic set, resized to
    their size: the nearest-neighbour audit applied to held-out images, its control."""
    rel = release.synthetic if release.synthetic is not None else release.data
    if rel is None:
        raise ValueError("per-original answers need a released data or synthetic set for their control")
    released = rel.images
    if released.shape[1:] != images.shape[1:]:
        released = torch.nn.functional.interpolate(released, size=images.shape[-2:], mode="nearest")
    return released[nearest_index(images, released)]


def release_vfe(release: Release, splits: Splits) -> dict[str, float]:
    """VFE v1 (:mod:`privbench.metrics.vfe`) of the released targets (averaged over frames for clips), for every
    defense that releases images."""
    from privbench.metrics.vfe import VFE_VERSION, normalized_vfe, visual_feature_entropy

    if release.data is None or release.data.images.shape[1:] != splits.private.images.shape[1:]:
        return {}
    x = release.data.images[splits.targets]
    if x.ndim == 5:  # a frame metric: the mean over all frames of the clips
        x = x.flatten(0, 1).contiguous()
    return {"vfe": float(visual_feature_entropy(x).mean()), "vfe_normalized": float(normalized_vfe(x).mean()),
            "vfe_version": float(VFE_VERSION)}



#: A reconstruction whose SSIM to its original reaches this is counted as memorised / recovered.
MEMORIZATION_SSIM = 0.9



def score(out: AttackOutput, splits: Splits, truth: Optional[torch.Tensor], use_lpips: bool = True,
          mask: Optional[torch.Tensor] = None, is_member: Optional[torch.Tensor] = None,
          oracle: Optional[GradientOracle] = None, aligned: Optional[Aligned] = None
          ) -> tuple[dict[str, Any], dict[str, str], Units]:
    """Central scoring of an attack's output. Returns ``(privacy metrics, notes, units)``.

    ``units`` (:class:`~privbench.core.calibration.Units`) carry the per-target evidence of the calibrated advantage
    over the no-release prior; when the output holds several kinds (reconstructions, rankings, membership scores),
    the kind with the largest advantage. ``mask`` ``(N_targets, 1, H, W)`` marks the sensitive (removed) region;
    fidelity inside it is reported as ``masked-psnr`` / ``masked-ssim``. Reconstructions are compared as in
    :func:`aligned_reconstructions` (``aligned``: its result, when the caller already has it); the share with
    SSIM >= ``MEMORIZATION_SSIM`` is ``memorized_rate``; reconstructions of a non-private training set are also
    compared with what was actually trained on (``training_*``).
    """
    privacy: dict[str, Any] = {}
    notes: dict[str, str] = {}
    candidates: list[Units] = []
    if out.reconstructions is not None:
        candidates.append(_score_reconstructions(out, splits, privacy, notes, use_lpips, mask, oracle, aligned))
    if out.rankings is not None:
        candidates.append(_score_rankings(out, splits, truth, privacy))
    if out.membership_scores is not None:
        candidates.append(_score_membership(out, is_member, privacy))
    privacy.update({f"attack_{k}": float(v) for k, v in out.extra.items()})
    if not candidates:
        raise ValueError("attack returned nothing to score")
    return privacy, notes, max(candidates, key=lambda u: u.estimate()[2])


def _score_reconstructions(out: AttackOutput, splits: Splits, privacy: dict[str, Any], notes: dict[str, str],
                           use_lpips: bool, mask: Optional[torch.Tensor], oracle: Optional[GradientOracle],
                           aligned: Optional[Aligned]) -> Units:
    """Fidelity, memorization and (a non-private training set) training-set metrics of the reconstructions, into
    ``privacy`` and ``notes``; per-target SSIM against its prior (or the control's) as units."""
    al = aligned if aligned is not None else aligned_reconstructions(out, splits, oracle)
    originals = al.originals
    rec = register(al.rec, originals)  # the attacker may register its reconstruction (REGISTRATION_RADIUS)
    notes["scoring.registration_radius"] = str(REGISTRATION_RADIUS)
    if out.sources is None and out.class_labels is None and len(rec) != len(splits.targets):
        raise ValueError(f"attack returned {len(rec)} reconstructions for {len(splits.targets)} targets")
    values, missing = reconstruction_metrics(rec, originals, mask=mask, use_lpips=use_lpips)
    privacy.update(values)
    notes.update({f"unavailable.{k}": v for k, v in missing.items()})
    per_target = ssim(rec, originals)
    privacy["memorized_rate"] = float((per_target >= MEMORIZATION_SSIM).float().mean())
    if al.control is not None:
        prior = ssim(register(*al.control), al.control[1])
        privacy["control_ssim"] = float(prior.mean())
        statistic = "best-match-ssim"
    else:
        guess = register(splits.aux.images.mean(0, keepdim=True).expand_as(originals).contiguous(), originals)
        prior = ssim(guess, originals)
        privacy["prior_ssim"] = float(prior.mean())
        statistic = "ssim"
    units = Units(statistic, per_target.double().numpy(), prior.double().numpy())
    if out.sources is not None and oracle is not None and not oracle.on_private:
        trained = oracle.training_set.images[out.sources]
        to_trained = register(al.rec, trained)  # registered to what it is compared with, like every score
        privacy["training_psnr"] = float(psnr(to_trained, trained).mean())
        privacy["training_ssim"] = float(ssim(to_trained, trained).mean())
    return units


def _score_rankings(out: AttackOutput, splits: Splits, truth: Optional[torch.Tensor],
                    privacy: dict[str, Any]) -> Units:
    """Linkage metrics of every ranking method (the best by top-1 unprefixed), into ``privacy``; top-1 hits
    against chance as units."""
    if truth is None:
        raise ValueError("attack returned rankings but did not declare needs_gallery")
    best = None
    size = truth.shape[1] if truth.ndim == 2 else len(splits.private)
    relevance = truth if truth.ndim == 2 else None
    for method, ranking in sorted(out.rankings.items()):
        s = linkage_scores(ranking, truth, size)
        privacy.update({f"{method}_{k}": v for k, v in s.items() if k in ("top1", "top5", "top1_pvalue", "map")})
        if best is None or s["top1"] > best[0]["top1"]:
            best = (s, ranking)
    assert best is not None
    privacy.update(best[0])
    if relevance is None:
        hits = (best[1][:, 0] == truth).double().numpy()
        chance = np.array([best[0]["chance_top1"]])
    else:  # per query: is the first answer one of its identity's clips; prior r_i / G
        hits = relevance.gather(1, best[1][:, :1].long()).flatten().double().numpy()
        chance = (relevance.sum(1).double() / size).numpy()
    return Units("top1", hits, chance)


def _score_membership(out: AttackOutput, is_member: Optional[torch.Tensor], privacy: dict[str, Any]) -> Units:
    """Membership metrics of every scoring method (the best by AUC as ``membership_*``), into ``privacy``; the best
    method's scores with the membership labels as units."""
    if is_member is None:
        raise ValueError("attack returned membership scores but did not declare needs_candidates")
    best_auc = None
    for method, scores in sorted(out.membership_scores.items()):
        if tuple(scores.shape) != tuple(is_member.shape) or not bool(torch.isfinite(scores).all()):
            raise ValueError(f"membership scores {method!r}: expected {len(is_member)} finite values")
        m = membership_scores(scores.detach().cpu(), is_member)
        privacy.update({f"{method}_{k}": v for k, v in m.items()})
        if best_auc is None or m["auc"] > best_auc[0]["auc"]:
            best_auc = (m, scores)
    assert best_auc is not None
    privacy.update({f"membership_{k}": v for k, v in best_auc[0].items()})
    return Units("auc", best_auc[1].detach().cpu().double().numpy(), np.array([0.5]),
                 labels=is_member.numpy().astype(bool))


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
    if rel.shape[1:] != originals.shape[1:] and rel.ndim == 4:
        rel = torch.nn.functional.interpolate(rel, size=originals.shape[-2:], mode="nearest")
    arrays = {"original": originals[:k], "released": rel, "reconstructed": recon[:k]}
    return {key: (frame_strip(v).clamp(0, 1) * 255).round().to(torch.uint8).numpy() for key, v in arrays.items()}


def frame_strip(x: torch.Tensor, frames: int = 4) -> torch.Tensor:
    """Images pass through; clips ``(N, T, C, H, W)`` become strips ``(N, C, H, k·W)`` of ``k`` evenly spaced
    frames side by side (what reconstruction grids and thumbnails show for video)."""
    if x.ndim != 5:
        return x
    pick = torch.linspace(0, x.shape[1] - 1, min(frames, x.shape[1])).round().long()
    y = x[:, pick]  # (N, k, C, H, W)
    return y.permute(0, 2, 3, 1, 4).reshape(y.shape[0], y.shape[2], y.shape[3], -1)


def gallery_permutation(splits: Splits, seed: int) -> tuple[torch.Tensor | ImageSet, torch.Tensor]:
    """The gallery an attack links released targets to, shuffled (runner-side seed), and the ground truth.

    - Without identities: all private originals; ``truth (N_targets,)`` is the gallery index of each target's
      original (which original is this?).
    - With identities (person re-identification): the private clips that are *not* targets, i.e. other recordings
      of the same people, as an :class:`ImageSet` with their person masks and keypoints (labels zeroed, identities
      withheld); ``truth (N_targets, G)`` bool marks the gallery items of each target's identity (who is this?).
      Splits keep at least one such clip per target identity.
    """
    g = torch.Generator().manual_seed(derive_seed(seed, "gallery"))
    ids = splits.private.identities
    if ids is None:
        perm = torch.randperm(len(splits.private), generator=g)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(len(perm))
        return splits.private.images[perm], inverse[splits.targets]
    keep = torch.ones(len(splits.private), dtype=torch.bool)
    keep[splits.targets] = False
    members = torch.nonzero(keep).flatten()
    members = members[torch.randperm(len(members), generator=g)]
    relevance = ids[splits.targets].view(-1, 1) == ids[members].view(1, -1)
    if not bool(relevance.any(1).all()):
        raise ValueError("a target's identity has no other private clip for the re-identification gallery")
    annotated = splits.private.subset(members)
    gallery = ImageSet(annotated.images, torch.zeros(len(members), dtype=torch.int64), None, annotated.masks,
                       annotated.keypoints)
    return gallery, relevance


def release_extra(extra: Mapping[str, Any]) -> tuple[dict[str, Optional[float]], dict[str, str]]:
    """A release's ``meta.extra`` (self-reported by the defense) as ``(numbers, texts)``: numbers for
    ``metrics.release`` (``None`` stays null), text for ``notes["release.<key>"]`` (strings as they are, lists and
    mappings as JSON), so a string such as ``accountant: "rdp"`` is kept instead of failing the cell."""
    numbers: dict[str, Optional[float]] = {}
    texts: dict[str, str] = {}
    for k, v in extra.items():
        if isinstance(v, str):
            texts[f"release.{k}"] = v
        elif isinstance(v, (list, tuple, Mapping)):
            texts[f"release.{k}"] = json.dumps(v, sort_keys=True)
        else:
            numbers[k] = None if v is None else float(v)
    return numbers, texts


def pack_correct(right: Any) -> str:
    """A ``(N,)`` bool vector as hex of its packed bits (``numpy.packbits``, big-endian bit order), the form records
    keep it in; :func:`privbench.core.stats.unpack_correct` inverts it given ``N``."""
    return np.packbits(np.asarray(right, dtype=bool)).tobytes().hex()


def utility_metrics(prepared: Any, reference: Any, n_test: int) -> dict[str, Any]:
    """``metrics.utility``'s accuracy fields: ``top1``, ``test_size`` and, against the reference (a ``Prepared`` of the suite's reference on the same
    seed and test set, or ``None``): ``reference_top1``, ``drop`` and the paired statistics of the drop, from the
    two models' answers on the same test samples: ``lost`` (the reference right, this wrong) and ``gained`` (the
    reverse), McNemar's discordant counts, and ``drop_var`` = the sampling variance of the paired mean
    difference, ``(lost + gained)/n² − drop²/n`` (what a bootstrap over the test samples converges to)."""
    out: dict[str, Any] = {"top1": prepared.utility, "test_size": n_test,
                           "reference_top1": None if reference is None else reference.utility,
                           "drop": None if reference is None else reference.utility - prepared.utility}
    right = prepared.correct
    if right is None:
        return out
    right = np.asarray(right, dtype=bool)
    ref = None if reference is None or reference.correct is None else np.asarray(reference.correct, dtype=bool)
    if ref is not None and len(ref) == len(right) == n_test:
        lost, gained = int((ref & ~right).sum()), int((~ref & right).sum())
        drop = (lost - gained) / n_test
        out.update(lost=lost, gained=gained, drop_var=max(0.0, (lost + gained) / n_test ** 2 - drop ** 2 / n_test))
    return out


def training_metrics(prepared: Any, release_numbers: Mapping[str, Optional[float]]) -> dict[str, float]:
    """The utility model's training log for ``metrics.utility``: ``train_top1`` and ``gap`` (train − test top-1,
    the generalisation gap) and, with early stopping, ``epochs_run``, ``best_epoch``, ``val_top1``; from the
    runner's utility training or, for a released model, the defense's ``task_*`` metadata."""
    log = dict(prepared.training) or {k[5:]: v for k, v in release_numbers.items()
                                      if k.startswith("task_") and v is not None}
    out = {k: float(log[k]) for k in ("train_top1", "epochs_run", "best_epoch", "val_top1") if k in log}
    if "train_top1" in out:
        out["gap"] = out["train_top1"] - prepared.utility
    return out
