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
from .contracts import Attack, AttackOutput, AttackView, Defense, ImageSet, Release, RunContext, Splits, TaskConfig
from .data import load_splits
from .data.core import DATASETS
from .errors import InputError
from .metrics import CostMeter, linkage_scores, reconstruction_metrics
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
                base.update(_run_cell(cell, attack, splits, prepared, reference, device, opts, suite))
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
              reference: Optional[float], device: torch.device, opts: RunOptions, suite: SuiteConfig
              ) -> dict[str, Any]:
    defense, release, utility, prep_cost = prepared
    exposed = attack.requires | (attack.uses & release.surfaces)
    gallery, truth = None, None
    if attack.needs_gallery:
        perm = torch.randperm(len(splits.private), generator=torch.Generator().manual_seed(99_991 + cell.seed))
        gallery = splits.private.images[perm]
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(len(perm))
        truth = inverse[splits.targets]
    view = AttackView(release=release.restricted(exposed), aux=splits.aux, targets=splits.targets.clone(),
                      image_shape=tuple(splits.info.shape), num_classes=splits.info.num_classes, gallery=gallery)
    ctx = RunContext(seed=cell.seed, device=device, task=suite.task, progress=False)
    with CostMeter() as cost:
        out = attack.run(view, ctx)
    mask = release.mask[splits.targets] if release.mask is not None else None
    privacy, notes, leakage = score(out, splits, truth, opts.use_lpips, mask=mask)
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
    result: dict[str, Any] = {"metrics": metrics, "notes": notes}
    if out.reconstructions is not None:
        result["artifacts"] = {"samples": _save_samples(opts.out, cell, splits, release, out.reconstructions)}
    return result


def _release_vfe(release: Release, splits: Splits) -> dict[str, float]:
    """VFE v1 (:mod:`benchmark.metrics.vfe`) of the released targets, for every defense that releases images."""
    from .metrics.vfe import VFE_VERSION, normalized_vfe, visual_feature_entropy

    if release.data is None or release.data.images.shape[1:] != splits.private.images.shape[1:]:
        return {}
    x = release.data.images[splits.targets]
    return {"vfe": float(visual_feature_entropy(x).mean()), "vfe_normalized": float(normalized_vfe(x).mean()),
            "vfe_version": float(VFE_VERSION)}


def score(out: AttackOutput, splits: Splits, truth: Optional[torch.Tensor], use_lpips: bool = True,
          mask: Optional[torch.Tensor] = None) -> tuple[dict[str, Any], dict[str, str], float]:
    """Central scoring of an attack's output. Returns ``(privacy metrics, notes, leakage in [0, 1])``.

    ``mask`` ``(N_targets, 1, H, W)`` marks the sensitive (removed) region; fidelity inside it is reported as
    ``masked-psnr`` / ``masked-ssim``. Leakage is the attack's success on a common scale (1 = fully leaky): SSIM of reconstructions (clipped at 0);
    linkage advantage over chance ``(top1 - c) / (1 - c)``; membership advantage ``2 * (AUC - 0.5)``.
    """
    privacy: dict[str, Any] = {}
    notes: dict[str, str] = {}
    leaks: list[float] = []
    originals = splits.private.images[splits.targets]
    if out.reconstructions is not None:
        rec = out.reconstructions
        if tuple(rec.shape) != tuple(originals.shape):
            raise ValueError(f"attack returned reconstructions {tuple(rec.shape)}, expected {tuple(originals.shape)}")
        values, missing = reconstruction_metrics(rec.detach().cpu().float(), originals, mask=mask,
                                                 use_lpips=use_lpips)
        privacy.update(values)
        notes.update({f"unavailable.{k}": v for k, v in missing.items()})
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
        raise ValueError("membership scoring needs ground truth from a membership-capable runner path")
    privacy.update({f"attack_{k}": float(v) for k, v in out.extra.items()})
    if not leaks:
        raise ValueError("attack returned nothing to score")
    return privacy, notes, max(leaks)


def _save_samples(out_dir: Path, cell: Cell, splits: Splits, release: Release, recon: torch.Tensor,
                  n: int = 8) -> str:
    """Store the first ``n`` targets' original / released / reconstructed images (uint8 .npz, no pickle)."""
    idx = splits.targets[:n]
    rel = release.data.images[idx] if release.data is not None else torch.zeros_like(splits.private.images[idx])
    if rel.shape[1:] != splits.private.images.shape[1:]:
        rel = torch.nn.functional.interpolate(rel, size=splits.private.images.shape[-2:], mode="nearest")
    arrays = {"original": splits.private.images[idx], "released": rel, "reconstructed": recon[:n]}
    rel_path = Path("samples") / cell.file_name.replace(".json", ".npz")
    path = out_dir / rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **{k: (v.clamp(0, 1) * 255).round().to(torch.uint8).numpy() for k, v in arrays.items()})
    os.replace(tmp, path)
    return rel_path.as_posix()
