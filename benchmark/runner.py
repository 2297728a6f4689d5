"""The runner: scores every (dataset, defense config, attack, seed) cell into one record.

Cells sharing (dataset, seed, defense config) form a *job*: the defense is built once (cached on disk under a
content hash), its utility is measured once, and each compatible attack becomes one record. Incompatible pairs
become ``skipped`` records with the reason; a crash inside a cell becomes a ``failed`` record. A record that
already exists with the same config hash is not recomputed, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .cache import ArtifactCache, code_hash
from .config import PluginSpec, SuiteConfig, stable_hash
from .contracts import (Attack, AttackOutput, AttackView, Defense, GradientOracle, ImageSet, Release, RunContext, Splits,
                        TaskConfig)
from .data import load_splits
from .data.core import DATASETS
from .errors import InputError
from .metrics import CostMeter, linkage_scores, membership_scores, reconstruction_metrics
from .models import accuracy, build_model, train_classifier
from .provenance import git_commit, provenance
from .records import SCHEMA_VERSION, read_record, write_record


@dataclass(frozen=True)
class RunOptions:
    out: Path
    jobs: int = 1
    device: str = "cpu"
    retry_failed: bool = False
    progress: bool = True
    use_lpips: bool = True


@dataclass(frozen=True)
class Cell:
    dataset: str
    seed: int
    defense: PluginSpec
    attack: PluginSpec

    @property
    def cell_id(self) -> str:
        return f"{self.dataset}/{self.defense.label}/{self.attack.label}/s{self.seed}"

    @property
    def file_name(self) -> str:
        return f"{self.dataset}__{self.defense.label}__{self.attack.label}__s{self.seed}.json"


@dataclass(frozen=True)
class Job:
    dataset: str
    seed: int
    defense: PluginSpec
    attacks: tuple[PluginSpec, ...]

    def cells(self) -> list[Cell]:
        return [Cell(self.dataset, self.seed, self.defense, a) for a in self.attacks]


@dataclass
class RunSummary:
    planned: int = 0
    reused: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0


def cell_config_hash(suite: SuiteConfig, cell: Cell) -> str:
    return stable_hash({
        "schema_version": SCHEMA_VERSION, "privbench": __version__, "suite": suite.name, "dataset": cell.dataset,
        "dataset_options": dict(suite.dataset_options.get(cell.dataset, {})),
        "splits": dataclasses.asdict(suite.splits), "task": dataclasses.asdict(suite.task), "seed": cell.seed,
        "defense": [cell.defense.id, cell.defense.params_dict], "attack": [cell.attack.id, cell.attack.params_dict],
    })


def plan(suite: SuiteConfig) -> list[Job]:
    """All jobs of the suite, ``none`` first within each (dataset, seed) so the utility reference is cached."""
    jobs = [Job(d, s, dspec, suite.attacks) for d in suite.datasets for s in suite.seeds for dspec in suite.defenses
            if dspec.datasets is None or d in dspec.datasets]
    return sorted(jobs, key=lambda j: (j.dataset, j.seed, j.defense.id != "none"))


def _is_done(path: Path, config_hash: str, retry_failed: bool) -> bool:
    if not path.is_file():
        return False
    try:
        rec = read_record(path)
    except InputError:
        return False  # unreadable: recompute and overwrite
    if rec["provenance"]["config_hash"] != config_hash:
        return False
    return not (retry_failed and rec["status"] == "failed")


def resolve_device(name: str) -> torch.device:
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA was requested but torch.cuda.is_available() is False")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: MPS was requested but is not available")
    return dev


def run_suite(suite: SuiteConfig, opts: RunOptions) -> RunSummary:
    """Run every pending cell of ``suite`` and write records under ``opts.out/records``."""
    resolve_device(opts.device)
    from defenses import DEFENSES
    from attacks import ATTACKS

    records_dir = opts.out / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    pending: list[Job] = []
    for job in plan(suite):
        todo = tuple(c.attack for c in job.cells()
                     if not _is_done(records_dir / c.file_name, cell_config_hash(suite, c), opts.retry_failed))
        summary.planned += len(job.attacks)
        summary.reused += len(job.attacks) - len(todo)
        if todo:
            pending.append(dataclasses.replace(job, attacks=todo))
    # Validate every plugin id before any work (clear error, no partial output).
    for job in pending:
        DEFENSES.get(job.defense.id)
        for a in job.attacks:
            ATTACKS.get(a.id)
    total = sum(len(j.attacks) for j in pending)
    commit = git_commit()
    bar = tqdm(total=total, unit="cell", desc=f"privbench {suite.name}", disable=not opts.progress or total == 0,
               dynamic_ncols=True)
    statuses: list[str] = []
    try:
        if opts.jobs <= 1 or len(pending) <= 1:
            for job in pending:  # in-process: the bar advances per cell
                statuses += run_job(suite, job, opts, commit, on_cell=lambda _status: bar.update(1))
        else:
            threads = max(1, (os.cpu_count() or 1) // opts.jobs)
            ctx = mp.get_context("spawn")
            with cf.ProcessPoolExecutor(opts.jobs, mp_context=ctx, initializer=_init_worker,
                                        initargs=(threads,)) as pool:
                futures = [pool.submit(run_job, suite, job, opts, commit) for job in pending]
                for fut in cf.as_completed(futures):
                    st = fut.result()
                    statuses += st
                    bar.update(len(st))
    finally:
        bar.close()
    summary.ok = statuses.count("ok")
    summary.skipped = statuses.count("skipped")
    summary.failed = statuses.count("failed")
    return summary


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# One job: build the defense once, measure utility once, run each attack.


def _splits_cached(cache: ArtifactCache, suite: SuiteConfig, dataset: str, seed: int) -> Splits:
    options = dict(suite.dataset_options.get(dataset, {}))
    key = "splits-" + stable_hash({"dataset": dataset, "options": options, "splits": dataclasses.asdict(suite.splits),
                                   "seed": seed, "code": code_hash(DATASETS.get(dataset), load_splits)})[:32]

    def make() -> dict[str, Any]:
        s = load_splits(dataset, suite.splits, seed, options)
        return {"private": [s.private.images, s.private.labels], "aux": [s.aux.images, s.aux.labels],
                "test": [s.test.images, s.test.labels], "targets": s.targets,
                "info": {**dataclasses.asdict(s.info), "shape": list(s.info.shape)}}

    state, _ = cache.get_or_create(key, make)
    from .contracts import DatasetInfo
    info = dict(state["info"])
    info["shape"] = tuple(info["shape"])
    return Splits(ImageSet(*state["private"]), ImageSet(*state["aux"]), ImageSet(*state["test"]), state["targets"],
                  DatasetInfo(**info))


def measure_utility(defense: Defense, release: Release, splits: Splits, task: TaskConfig, ctx: RunContext) -> float:
    """Top-1 test accuracy of the task model the defense prescribes.

    A released model is evaluated as is; otherwise the defense's ``task_model`` is trained from scratch on the
    released data with the defense's ``optimizer``. Test images pass through the release's
    ``inference_transform`` (input-side defenses act at inference too).
    """
    test = splits.test
    if release.inference_transform is not None:
        test = ImageSet(release.inference_transform(test.images, ctx.generator(salt=7)), test.labels)
    model = release.model
    if model is None:
        if release.data is None:
            raise InputError("release exposes neither a model nor data to train one on")
        torch.manual_seed(ctx.seed)
        model = defense.task_model(release.data.images.shape[1], splits.info.num_classes, task)
        model = train_classifier(model, release.data, epochs=task.epochs, batch_size=task.batch_size, lr=task.lr,
                                 generator=ctx.generator(salt=3), device=ctx.device, optimizer=defense.optimizer)
    return accuracy(model.to(ctx.device), test, ctx.device)


def _prepare(suite: SuiteConfig, defense_spec: PluginSpec, splits: Splits, seed: int, cache: ArtifactCache,
             device: torch.device) -> tuple[Defense, Release, float, dict[str, float]]:
    """Build (or load from cache) the release of ``defense_spec`` and its utility."""
    from defenses import DEFENSES

    cls = DEFENSES.get(defense_spec.id)
    defense = cls(defense_spec.params)
    ctx = RunContext(seed=seed, device=device, task=suite.task)
    key = "release-" + stable_hash({"defense": [defense_spec.id, defense_spec.params_dict], "data": splits.info.hash,
                                    "splits": dict(splits.info.split_hashes), "seed": seed,
                                    "task": dataclasses.asdict(suite.task), "version": __version__,
                                    "code": code_hash(cls, build_model, train_classifier, measure_utility)})[:40]

    def make() -> dict[str, Any]:
        with CostMeter() as cost:
            release = defense.build(splits, ctx)
        state = defense.release_state(release)
        state["meta"]["defense_seconds"] = cost.seconds
        with CostMeter() as ucost:
            state["utility"] = measure_utility(defense, release, splits, suite.task, ctx)
        state["utility_seconds"] = ucost.seconds
        return state

    state, _ = cache.get_or_create(key, make)
    release = defense.restore(state, splits, ctx)
    return defense, release, float(state["utility"]), {"defense_seconds": float(state["meta"]["defense_seconds"]),
                                                       "utility_seconds": float(state["utility_seconds"])}


def run_job(suite: SuiteConfig, job: Job, opts: RunOptions, commit: str,
            on_cell: Optional[Callable[[str], None]] = None) -> list[str]:
    """Run one job's cells and write their records; returns their statuses (``on_cell`` is told each one)."""
    from attacks import ATTACKS
    from defenses import DEFENSES

    device = resolve_device(opts.device)
    cache = ArtifactCache(opts.out / "cache")
    splits = _splits_cached(cache, suite, job.dataset, job.seed)
    defense_cls = DEFENSES.get(job.defense.id)
    statuses = []
    prepared: Optional[tuple[Defense, Release, float, dict[str, float]]] = None
    reference: Optional[float] = None
    defense_error: Optional[str] = None
    for attack_spec in job.attacks:
        cell = Cell(job.dataset, job.seed, job.defense, attack_spec)
        attack = ATTACKS.get(attack_spec.id)(attack_spec.params)
        base = _record_base(suite, cell, splits, attack, commit, opts.device)
        reason = attack.compatible(defense_cls.surfaces)
        if reason is not None:
            base.update(status="skipped", reason=reason)
        elif defense_error is not None:
            base.update(status="failed", reason=defense_error)
        else:
            try:
                if prepared is None:
                    prepared = _prepare(suite, job.defense, splits, job.seed, cache, device)
                    none = PluginSpec("none", DEFENSES.get("none").Params())
                    reference = _prepare(suite, none, splits, job.seed, cache, device)[2]
                base.update(_run_cell(cell, attack, splits, prepared, reference, device, opts, suite, cache))
            except InputError:
                raise
            except Exception as e:  # a crashed cell becomes a 'failed' record with its reason, never a silent skip
                msg = f"{type(e).__name__}: {e}"
                base.update(status="failed", reason=msg, traceback=traceback.format_exc(limit=6))
                if prepared is None:
                    defense_error = f"defense failed: {msg}"
        write_record(opts.out / "records" / cell.file_name, base)
        statuses.append(base["status"])
        if on_cell is not None:
            on_cell(base["status"])
    return statuses


def _record_base(suite: SuiteConfig, cell: Cell, splits: Splits, attack: Attack, commit: str,
                 device: str) -> dict[str, Any]:
    from defenses import DEFENSES

    dcls = DEFENSES.get(cell.defense.id)
    strength = dcls.strength
    visible = sorted(s.value for s in (attack.requires | (attack.uses & dcls.surfaces)) & dcls.surfaces)
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": suite.name,
        "cell_id": cell.cell_id,
        "dataset": {"name": splits.info.name, "hash": splits.info.hash, "sizes": dict(splits.info.sizes),
                    "split_hashes": dict(splits.info.split_hashes), "shape": list(splits.info.shape),
                    "num_classes": splits.info.num_classes,
                    "options": dict(suite.dataset_options.get(cell.dataset, {}))},
        "defense": {"id": cell.defense.id, "label": cell.defense.label, "params": cell.defense.params_dict,
                    "strength": None if strength is None else
                    {"name": strength, "value": cell.defense.params_dict[strength]}},
        "attack": {"id": cell.attack.id, "label": cell.attack.label, "params": cell.attack.params_dict},
        "seed": cell.seed,
        "threat_model": {"surfaces": visible, "access": attack.access.value, "adaptive": attack.adaptive,
                         "aux_size": splits.info.sizes["aux"], "aux_labels_known": True, "bn_stats_known": False,
                         "gallery_size": splits.info.sizes["private"] if attack.needs_gallery else None,
                         "targets": splits.info.sizes["targets"]},
        "task": dataclasses.asdict(suite.task),
        "status": "ok",
        "reason": None,
        "metrics": {},
        "notes": {},
        "artifacts": {},
        "provenance": provenance(cell_config_hash(suite, cell), device, commit),
    }


def _run_cell(cell: Cell, attack: Attack, splits: Splits, prepared: tuple[Defense, Release, float, dict[str, float]],
              reference: Optional[float], device: torch.device, opts: RunOptions, suite: SuiteConfig,
              cache: Optional[ArtifactCache] = None) -> dict[str, Any]:
    defense, release, utility, prep_cost = prepared
    exposed = attack.requires | (attack.uses & release.surfaces)
    gallery, truth = None, None
    if attack.needs_gallery:
        perm = torch.randperm(len(splits.private), generator=torch.Generator().manual_seed(99_991 + cell.seed))
        gallery = splits.private.images[perm]
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(len(perm))
        truth = inverse[splits.targets]
    candidates, is_member = membership_candidates(splits, cell.seed) if attack.needs_candidates else (None, None)
    view = AttackView(release=release.restricted(exposed), aux=splits.aux, targets=splits.targets.clone(),
                      image_shape=tuple(splits.info.shape), num_classes=splits.info.num_classes, gallery=gallery,
                      candidates=candidates)
    ctx = RunContext(seed=cell.seed, device=device, task=suite.task, progress=False,
                     memo=None if cache is None else _attack_memo(cache, cell.attack.id))
    with CostMeter() as cost:
        out = attack.run(view, ctx)
    if out.per_gallery is not None:
        if truth is None or len(out.per_gallery) != len(splits.private):
            raise ValueError("per_gallery needs needs_gallery and one reconstruction per gallery image")
        out = dataclasses.replace(out, reconstructions=out.per_gallery[truth], per_gallery=None)
    mask = release.mask[splits.targets] if release.mask is not None else None
    aligned = aligned_reconstructions(out, splits, release.gradients) if out.reconstructions is not None else None
    privacy, notes, leakage = score(out, splits, truth, opts.use_lpips, mask=mask, is_member=is_member,
                                    oracle=release.gradients, aligned=aligned)
    metrics = {
        "privacy": privacy,
        "leakage": leakage,
        "utility": {"top1": utility, "reference_top1": reference,
                    "drop": None if reference is None else reference - utility},
        "bitrate": {"bits_per_image": release.meta.bits_per_image},
        "release": {**{k: float(v) for k, v in release.meta.extra.items()}, **_release_vfe(release, splits)},
        "cost": {**prep_cost, "attack_seconds": cost.seconds, "peak_rss_mb": cost.peak_rss_mb},
    }
    if release.meta.epsilon is not None:
        metrics["dp"] = {"epsilon": release.meta.epsilon, "delta": release.meta.delta}
        notes["dp.accountant"] = str(release.meta.accountant)
    result: dict[str, Any] = {"metrics": metrics, "notes": notes}
    if aligned is not None:
        result["artifacts"] = {"samples": _save_samples(opts.out, cell, splits, release, *aligned,
                                                        out.sources is None and out.class_labels is None)}
    return result


def _attack_memo(cache: ArtifactCache, attack_id: str) -> Callable[[str, Callable[[], dict]], dict]:
    def memo(key: str, make: Callable[[], dict]) -> dict:
        return cache.get_or_create(f"attack-{attack_id}-{key}", make)[0]
    return memo


def membership_candidates(splits: Splits, seed: int) -> tuple[ImageSet, torch.Tensor]:
    """Members = the targets' private originals; non-members = as many test images (never trained on), shuffled.

    Returns ``(candidates, is_member (M,) bool)``; the ground truth stays with the runner.
    """
    n = min(len(splits.targets), len(splits.test))
    members = splits.private.subset(splits.targets[:n])
    images = torch.cat([members.images, splits.test.images[:n]])
    labels = torch.cat([members.labels, splits.test.labels[:n]])
    truth = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    perm = torch.randperm(2 * n, generator=torch.Generator().manual_seed(77_017 + seed))
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
            labels = oracle.train_labels[out.sources]
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


def _release_vfe(release: Release, splits: Splits) -> dict[str, float]:
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
            trained = oracle.train_images[out.sources]
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


def _save_samples(out_dir: Path, cell: Cell, splits: Splits, release: Release, recon: torch.Tensor,
                  originals: torch.Tensor, aligned: bool, n: int = 8) -> str:
    """Store the first ``n`` original / released / reconstructed images (uint8 .npz, no pickle). ``released`` is
    black unless the reconstructions are aligned with the targets and the release holds their images."""
    idx = splits.targets[:n]
    k = min(n, len(recon))
    if aligned and release.data is not None:
        rel = release.data.images[idx]
    else:
        rel = torch.zeros_like(originals[:k])
    if rel.shape[1:] != originals.shape[1:]:
        rel = torch.nn.functional.interpolate(rel, size=originals.shape[-2:], mode="nearest")
    arrays = {"original": originals[:k], "released": rel, "reconstructed": recon[:k]}
    rel_path = Path("samples") / cell.file_name.replace(".json", ".npz")
    path = out_dir / rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **{k: (v.clamp(0, 1) * 255).round().to(torch.uint8).numpy() for k, v in arrays.items()})
    os.replace(tmp, path)
    return rel_path.as_posix()
