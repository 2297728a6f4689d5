"""The runner (driver): plan → execute → write records.

It plans a suite into jobs (``privbench.run.plan``), skips cells whose record already carries the same cell key (so a
killed run resumes, and an edit re-runs exactly the cells whose code changed), hands the pending jobs to an
:class:`Executor`, and alone writes what comes back: sample images, then each record, atomically.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from tqdm import tqdm

from privbench.core.atomic import atomic_path
from privbench.core.errors import InputError
from privbench.core.images import Splits
from privbench.core.provenance import git_commit, machine, provenance
from privbench.core.records import SCHEMA_VERSION, read_record, write_record
from privbench.core.registry import ATTACKS, DEFENSES
from privbench.core.seeding import set_deterministic
from privbench.core.specs import PluginSpec, SuiteConfig
from privbench.run.cache import ArtifactCache
from privbench.run.evaluate import CellResult, EvalOptions, iter_job, load_splits_cached
from privbench.run.isolation import exit_with_parent
from privbench.run.plan import Cell, Job, cell_key, code_versions, config_hash, core_hash, plan
from privbench.run.plugins import load_plugins


@dataclass(frozen=True)
class RunOptions:
    out: Path
    jobs: int = 1
    device: str = "cpu"
    retry_failed: bool = False
    progress: bool = True
    use_lpips: bool = True
    plugins: tuple[str, ...] = ()  # plugin files every worker and attack process loads
    dp_audit_trials: int = 20_000  # steps per world of the step-level DP audit of every ε claim

    def __post_init__(self) -> None:
        if self.dp_audit_trials < 200:
            raise InputError(f"--dp-audit-trials must be at least 200, got {self.dp_audit_trials}")


@dataclass
class RunSummary:
    planned: int = 0
    reused: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    failed_cells: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobTask:
    """A pending job with everything a worker needs to evaluate it and stamp its records."""

    suite: SuiteConfig
    job: Job
    keys: dict[str, tuple[str, dict[str, str], str]]  # attack label -> (config hash, code versions, cell key)
    core: str
    commit: str
    opts: RunOptions
    data: dict[str, Any] = field(default_factory=dict)  # content and split hashes of the job's dataset and seed


def resolve_device(name: str) -> torch.device:
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA was requested but torch.cuda.is_available() is False")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: MPS was requested but is not available")
    return dev


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
# Executors: where jobs run. Workers return results as data; only the driver writes.


class Executor(ABC):
    """Runs job tasks and yields each finished cell's result as soon as it exists; only the driver writes."""

    @abstractmethod
    def run(self, tasks: list[JobTask]) -> Iterator[CellResult]:
        """Evaluate ``tasks``; a task that crashes as a whole yields ``failed`` results for its unfinished cells."""


class InlineExecutor(Executor):
    """In this process, one job after another."""

    def run(self, tasks):
        for task in tasks:
            seen: set[str] = set()
            try:
                for result in execute_job(task):
                    seen.add(result.file_name)
                    yield result
            except Exception as e:  # e.g. the splits of this job could not be loaded
                yield from crashed_cells(task, seen, f"{type(e).__name__}: {e}")


class ProcessPoolExecutor(Executor):
    """A local pool of spawned worker processes (torch threads split among them); workers stream finished cells
    to the driver through a queue."""

    def __init__(self, workers: int, plugins: tuple[str, ...]) -> None:
        self.workers, self.plugins = workers, plugins

    def run(self, tasks):
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        ctx = mp.get_context("spawn")
        from multiprocessing.managers import SyncManager

        manager = SyncManager(ctx=ctx)
        driver = os.getpid()
        manager.start(initializer=exit_with_parent, initargs=(driver,))  # ends with this driver, like the workers
        with manager:
            results = manager.Queue()
            pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker,
                                          initargs=(threads, self.plugins, driver))
            try:
                futures = {pool.submit(stream_job, t, results): t for t in tasks}
                seen: dict[str, set[str]] = {}
                pending = set(futures)
                while pending:
                    done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                    yield from _drain(results, seen)  # everything a finished worker put is in the queue now
                    for fut in done:
                        if fut.exception() is not None:
                            task = futures[fut]
                            yield from crashed_cells(task, seen.get(_task_id(task), set()),
                                                     f"{type(fut.exception()).__name__}: {fut.exception()}")
                yield from _drain(results, seen)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """Jobs as Ray tasks (ray 2.x) on a cluster: ``ray.init(address)``, or a local instance when ``address`` is
    ``None``. Each task returns its cells' results as data; the driver alone writes records.

    What travels with a job: the task (pickled by Ray), the text of every plugin file, and the hashes the driver
    computed. A worker refuses a job whose plugin files are not at the same path with the same content (its attack
    processes load them by path), whose code hashes differ from the driver's, or whose data hashes differ: no record
    can carry another code's or another data's key. A worker that dies mid-job (node lost, OOM-killed) is retried by
    Ray up to ``retries`` times; a job's results are yielded only once, from the attempt that finished, so no record
    is duplicated. Each job gets ``cpus_per_job`` CPUs and as many torch threads; metrics equal the local
    executor's when it gives jobs the same thread count (``--jobs N`` on ``N · cpus_per_job`` cores). The artifact
    cache lives at the run's ``cache/`` path on every node (shared storage shares it).
    """

    def __init__(self, plugins: tuple[str, ...], address: Optional[str] = None, cpus_per_job: int = 1,
                 retries: int = 2, num_cpus: Optional[int] = None) -> None:
        self.plugins, self.address, self.cpus_per_job = plugins, address, cpus_per_job
        self.retries, self.num_cpus = retries, num_cpus

    def run(self, tasks):
        import pickle

        try:
            import ray
        except ImportError:
            raise InputError("--executor ray needs Ray: pip install -e '.[ray]'") from None
        started = not ray.is_initialized()
        if started:
            if self.address is None:  # a fresh local instance, whatever RAY_ADDRESS or a running cluster says
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        sources = tuple((p, Path(p).read_text()) for p in self.plugins)
        job = ray.remote(num_cpus=self.cpus_per_job, max_retries=self.retries)(ray_job)
        try:
            refs = {job.remote(pickle.dumps(t), sources, self.cpus_per_job): t for t in tasks}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    task = refs[ref]
                    try:
                        results = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - a job that failed on every attempt
                        cause = getattr(e, "cause", None) or e
                        yield from crashed_cells(task, set(), f"{type(cause).__name__}: {cause}")
                        continue
                    yield from results
        finally:
            if started:
                ray.shutdown()


def ray_job(task_bytes: bytes, sources: tuple[tuple[str, str], ...], threads: int) -> list[CellResult]:
    """Ray worker side of :class:`RayExecutor`: the driver's plugins, a check that this worker runs the driver's
    code, then the job. Returns its cells' results."""
    import pickle
    import socket

    from privbench.run.plugins import load_builtins

    torch.set_num_threads(max(1, threads))
    set_deterministic()
    load_builtins()
    _load_plugin_sources(sources)
    task: JobTask = pickle.loads(task_bytes)  # from the driver (trusted), after its plugins are importable
    node = socket.gethostname()
    for cell in task.job.cells():
        expected = task.keys[cell.attack.label][1]
        if code_versions(cell.defense.id, cell.attack.id, task.suite.reference) != expected:
            raise RuntimeError(f"Ray worker on {node}: its code for {cell.cell_id} differs from the driver's "
                               "(install the same privbench commit and plugin packages on every node)")
    info = load_splits_cached(ArtifactCache(task.opts.out / "cache"), task.suite, task.job.dataset, task.job.seed).info
    if task.data and (info.hash != task.data["hash"] or dict(info.split_hashes) != task.data["splits"]):
        raise RuntimeError(f"Ray worker on {node}: dataset {task.job.dataset!r} differs from the driver's (same "
                           "data files on every node)")
    return list(execute_job(task))


def _load_plugin_sources(sources: tuple[tuple[str, str], ...]) -> None:
    """Load the driver's plugin files, which must be at the same path with the same content on this worker (its
    attack processes load them by path): a shared filesystem, or the same checkout on every node."""
    import socket

    for path, text in sources:
        p = Path(path)
        if not p.is_file() or p.read_text() != text:
            raise RuntimeError(f"Ray worker on {socket.gethostname()}: plugin file {path} is "
                               f"{'different' if p.is_file() else 'missing'} here; put plugin files on a path every "
                               "node shares, or install them as a package (entry points)")
        load_plugins((path,))


def _task_id(task: JobTask) -> str:
    return f"{task.job.dataset}/{task.job.seed}/{task.job.defense.label}"


def _drain(results: Any, seen: dict[str, set[str]]) -> Iterator[CellResult]:
    import queue

    while True:
        try:
            task_id, result = results.get_nowait()
        except queue.Empty:
            return
        seen.setdefault(task_id, set()).add(result.file_name)
        yield result


def stream_job(task: JobTask, results: Any) -> int:
    """Worker side of :class:`ProcessPoolExecutor`: evaluate a job, putting each finished cell in ``results``."""
    n = 0
    for result in execute_job(task):
        results.put((_task_id(task), result))
        n += 1
    return n


def crashed_cells(task: JobTask, seen: set[str], reason: str) -> Iterator[CellResult]:
    """``failed`` results for the cells of ``task`` that did not finish (its worker or job setup crashed)."""
    for cell in task.job.cells():
        if cell.file_name in seen:
            continue
        cfg, code, key = task.keys[cell.attack.label]
        rec = {"schema_version": SCHEMA_VERSION, "suite": task.suite.name, "cell_id": cell.cell_id,
               "dataset": {"name": cell.dataset, "hash": "", "sizes": {}}, "seed": cell.seed,
               "defense": {"id": cell.defense.id, "label": cell.defense.label, "params": cell.defense.params_dict,
                           "role": "control" if DEFENSES.get(cell.defense.id).control else "defense"},
               "attack": {"id": cell.attack.id, "label": cell.attack.label, "params": cell.attack.params_dict,
                          "control_bar": control_bar(ATTACKS.get(cell.attack.id), cell.defense)},
               "threat_model": {}, "reference": task.suite.reference, "status": "failed",
               "reason": f"job crashed: {reason}", "metrics": {}, "notes": {}, "artifacts": {},
               "provenance": provenance(config_hash=cfg, cell_key=key, code=code, device=task.opts.device,
                                        commit=task.commit, machine_info=machine(task.opts.device))}
        yield CellResult(cell.file_name, rec)


def init_worker(threads: int, plugins: tuple[str, ...], driver: Optional[int] = None) -> None:
    """Worker start-up: thread count, determinism settings, the same plugins as the driver, and an exit when the
    driver (pid ``driver``) goes away, also when it died before this worker started (a killed run leaves no worker
    computing)."""
    exit_with_parent(driver)
    torch.set_num_threads(threads)
    set_deterministic()
    load_plugins(plugins)


def execute_job(task: JobTask) -> Iterator[CellResult]:
    """Evaluate one job (in whatever process the executor chose), yielding its stamped records cell by cell."""
    opts, job = task.opts, task.job
    eval_opts = EvalOptions(device=opts.device, use_lpips=opts.use_lpips, plugins=opts.plugins,
                            threads=torch.get_num_threads(), dp_audit_trials=opts.dp_audit_trials)
    machine_info = machine(opts.device)

    def make_record(spec: PluginSpec, splits: Splits) -> dict[str, Any]:
        cfg, code, key = task.keys[spec.label]
        rec = record_skeleton(task.suite, Cell(job.dataset, job.seed, job.defense, spec), splits)
        rec["provenance"] = provenance(config_hash=cfg, cell_key=key, code=code, device=opts.device,
                                       commit=task.commit, machine_info=machine_info)
        return rec

    yield from iter_job(task.suite, job.dataset, job.seed, job.defense, job.attacks, eval_opts,
                        ArtifactCache(opts.out / "cache"), task.core, make_record)


def _recipe_reference(dcls: type, params: Any) -> Optional[dict[str, Any]]:
    ref = dcls(params).recipe_reference()
    return None if ref is None else dataclasses.asdict(ref)


def control_bar(attack_cls: type, defense: PluginSpec) -> Optional[float]:
    """The bar ``defense`` sets as one of the attack's positive controls, or ``None``. Only the control's default
    configuration counts: the bar was set for it, and a weakened copy (say a 8 px shift at JPEG quality 5) must not
    make a competent attack read "attack failed"."""
    bar = dict(attack_cls.positive_controls).get(defense.id)
    if bar is None:
        return None
    defaults = PluginSpec(defense.id, DEFENSES.get(defense.id).Params()).params_dict
    return float(bar) if defense.params_dict == defaults else None


def record_skeleton(suite: SuiteConfig, cell: Cell, splits: Splits) -> dict[str, Any]:
    """The record of ``cell`` before evaluation: identity, configuration and threat model."""
    dcls, acls = DEFENSES.get(cell.defense.id), ATTACKS.get(cell.attack.id)
    strength = dcls(cell.defense.params).strength_param()
    visible = sorted(s.value for s in (acls.requires | (acls.uses & dcls.surfaces)) & dcls.surfaces)
    return {
        "_file_name": cell.file_name,
        "schema_version": SCHEMA_VERSION,
        "suite": suite.name,
        "cell_id": cell.cell_id,
        "dataset": {"name": splits.info.name, "hash": splits.info.hash, "sizes": dict(splits.info.sizes),
                    "split_hashes": dict(splits.info.split_hashes), "shape": list(splits.info.shape),
                    "num_classes": splits.info.num_classes,
                    "options": dict(suite.dataset_options.get(cell.dataset, {}))},
        "defense": {"id": cell.defense.id, "label": cell.defense.label, "params": cell.defense.params_dict,
                    "role": "control" if dcls.control else "defense",
                    "claims": sorted(t.value for t in dcls(cell.defense.params).claimed()),
                    "recipe_reference": _recipe_reference(dcls, cell.defense.params),
                    "strength": None if strength is None else
                    {"name": strength, "value": cell.defense.params_dict[strength]}},
        "attack": {"id": cell.attack.id, "label": cell.attack.label, "params": cell.attack.params_dict,
                   # the bar this cell's defense sets as one of the attack's positive controls (None: it is not one)
                   "control_bar": control_bar(acls, cell.defense)},
        "seed": cell.seed,
        "threat_model": {"name": acls.threat_model().value, "surfaces": visible, "access": acls.access.value, "adaptive": acls.adaptive,
                         "aux_size": splits.info.sizes["aux"], "aux_labels_known": True, "bn_stats_known": False,
                         "gallery_size": (splits.info.sizes.get("gallery", splits.info.sizes["private"])
                                          if acls.needs_gallery else None),
                         "targets": splits.info.sizes["targets"]},
        "task": dataclasses.asdict(suite.task),
        "reference": suite.reference,
        "status": "ok",
        "reason": None,
        "metrics": {},
        "notes": {},
        "artifacts": {},
    }


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
