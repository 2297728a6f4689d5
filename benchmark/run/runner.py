"""The runner (driver): plan → execute → write records.

It plans a suite into jobs (``privbench.run.plan``), skips cells whose record already carries the same cell key (so a
killed run resumes, and an edit re-runs exactly the cells whose code changed), hands the pending jobs to an
:class:`Executor`, and alone writes what comes back: sample images, then each record, atomically.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from privbench.core.atomic import atomic_path
from privbench.core.errors import InputError
from privbench.core.provenance import git_commit
from privbench.core.records import read_record, write_record
from privbench.core.seeding import set_deterministic
from privbench.core.specs import SuiteConfig
from privbench.run.cache import ArtifactCache
from privbench.run.evaluate import CellResult, load_splits_cached
from privbench.run.executors import Executor, InlineExecutor, ProcessPoolExecutor
from privbench.run.plan import cell_key, code_versions, config_hash, core_hash, plan
from privbench.run.prebuild import PrebuildSummary, groups_of, prebuild
from privbench.run.worker import JobTask, RunOptions, resolve_device


@dataclass
class RunSummary:
    planned: int = 0
    reused: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    failed_cells: list[str] = field(default_factory=list)
    prebuilt: Optional[PrebuildSummary] = None  # the releases built seeds-together before the cells



def _is_done(path: Path, key: str, retry_failed: bool, commit: str) -> bool:
    """Whether the record at ``path`` can be reused: same cell key, not a failure being retried, and not made by a
    dirty tree when this tree is clean (so a run at a clean commit refreshes such records)."""
    if not path.is_file():
        return False
    try:
        rec = read_record(path)
    except InputError:
        return False  # unreadable: recompute and overwrite
    if rec["provenance"].get("cell_key") != key:
        return False  # other configuration or other code: stale
    if str(rec["provenance"]["git_commit"]).endswith("+dirty") and not commit.endswith("+dirty"):
        return False
    return not (retry_failed and rec["status"] == "failed")



# ---------------------------------------------------------------------------------------------------------------
# The driver.


def pending_tasks(suite: SuiteConfig, opts: RunOptions, summary: RunSummary,
                  data: dict[tuple[str, int], dict[str, Any]]) -> list[JobTask]:
    """Jobs with at least one cell whose record is missing, failed (with ``retry_failed``) or stale.

    ``data[(dataset, seed)]`` holds the content and split hashes that enter each cell's key. Reused ``failed``
    records count as failed in ``summary``.
    """
    records = opts.out / "records"
    core, commit = core_hash(), git_commit()
    run = {"device": torch.device(opts.device).type, "use_lpips": opts.use_lpips}
    code_cache: dict[tuple[str, str], dict[str, str]] = {}
    tasks = []
    for job in plan(suite):
        keys, todo = {}, []
        for cell in job.cells():
            ids = (cell.defense.id, cell.attack.id)
            code = code_cache.setdefault(ids, code_versions(*ids, suite.reference))
            cfg = config_hash(suite, cell, data[(cell.dataset, cell.seed)], run)
            keys[cell.attack.label] = (cfg, code, cell_key(cfg, code))
            path = records / cell.file_name
            if not _is_done(path, keys[cell.attack.label][2], opts.retry_failed, commit):
                todo.append(cell.attack)
            elif (rec := read_record(path))["status"] == "failed":
                summary.failed += 1
                summary.failed_cells.append(f"{rec['cell_id']} (reused; --retry-failed recomputes it): "
                                            f"{rec['reason']}")
        summary.planned += len(job.attacks)
        summary.reused += len(job.attacks) - len(todo)
        if todo:
            tasks.append(JobTask(suite, dataclasses.replace(job, attacks=tuple(todo)), keys, core, commit, opts,
                                 data[(job.dataset, job.seed)]))
    return tasks


def write_result(out: Path, result: CellResult) -> None:
    """Artifacts first (sample images, the calibrated advantage's units), then the record (atomically): a record on
    disk always has its artifacts."""
    artifacts = {}
    for kind, arrays in (("samples", result.samples), ("units", result.units)):
        if arrays is None:
            continue
        rel = Path(kind) / result.file_name.replace(".json", ".npz")
        with atomic_path(out / rel, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        artifacts[kind] = rel.as_posix()
    if artifacts:
        result.record["artifacts"] = artifacts
    write_record(out / "records" / result.file_name, result.record)


def prebuild_releases(suite: SuiteConfig, opts: RunOptions, tasks: list[JobTask], cache: ArtifactCache
                      ) -> PrebuildSummary:
    """The pending seeds of each defense configuration built together (``privbench.run.prebuild``)."""
    groups = groups_of(tasks, suite.reference)
    with tqdm(total=len(groups), unit="config", desc="building releases, seeds together",
              disable=not opts.progress, dynamic_ncols=True) as bar:
        return prebuild(suite, groups, cache, torch.device(opts.device), tasks[0].core, opts.dp_audit_trials,
                        lambda d, s: load_splits_cached(cache, suite, d, s), bar.update)


def run_suite(suite: SuiteConfig, opts: RunOptions, executor: Optional[Executor] = None) -> RunSummary:
    """Run every pending cell of ``suite`` and write records under ``opts.out/records``.

    Bad input (an unsatisfiable split, an unknown device) raises :class:`InputError` before any record is
    written; failures inside cells become ``failed`` records listed in the summary.
    """
    resolve_device(opts.device)
    set_deterministic()
    (opts.out / "records").mkdir(parents=True, exist_ok=True)
    cache = ArtifactCache(opts.out / "cache")
    data = {}
    for dataset in suite.datasets:  # validate split sizes up front (and warm the split cache for the workers)
        for seed in suite.seeds:
            info = load_splits_cached(cache, suite, dataset, seed).info
            data[(dataset, seed)] = {"hash": info.hash, "splits": dict(info.split_hashes), "sizes": dict(info.sizes)}
    summary = RunSummary()
    tasks = pending_tasks(suite, opts, summary, data)
    together = opts.batch_seeds if opts.batch_seeds is not None else torch.device(opts.device).type == "cuda"
    if together and len(suite.seeds) > 1 and tasks:
        summary.prebuilt = prebuild_releases(suite, opts, tasks, cache)
    total = sum(len(t.job.attacks) for t in tasks)
    if executor is None:
        executor = InlineExecutor() if opts.jobs <= 1 or len(tasks) <= 1 else ProcessPoolExecutor(opts.jobs,
                                                                                                   opts.plugins)
    bar = tqdm(total=total, unit="cell", desc=f"privbench {suite.name}", disable=not opts.progress or total == 0,
               dynamic_ncols=True)
    try:
        for result in executor.run(tasks):
            write_result(opts.out, result)
            bar.update(1)
            status = result.record["status"]
            setattr(summary, status, getattr(summary, status) + 1)
            if status == "failed":
                summary.failed_cells.append(f"{result.record['cell_id']}: {result.record['reason']}")
    finally:
        bar.close()
    return summary
