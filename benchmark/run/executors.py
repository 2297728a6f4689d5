"""Executors: where jobs run (docs/DESIGN.md, pipeline). :class:`InlineExecutor` (one process),
:class:`ProcessPoolExecutor` (``--jobs N``, spawned workers) and :class:`RayExecutor` (a Ray cluster). Workers
return results as data; only the driver writes. A subclass's ``run(tasks)`` yields each finished cell's
:class:`~privbench.run.evaluate.CellResult`, and ``failed`` results for the cells of a task that crashed."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from privbench.core.errors import InputError
from privbench.core.seeding import set_deterministic
from privbench.run.cache import ArtifactCache
from privbench.run.evaluate import CellResult, load_splits_cached
from privbench.run.plan import code_versions
from privbench.run.plugins import load_plugins
from privbench.run.startup import exit_with_parent
from privbench.run.worker import JobTask, crashed_cells, execute_job, init_worker


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
            task_id, blob = results.get_nowait()
        except queue.Empty:
            return
        result = pickle.loads(blob)  # pickled by this run's own worker (trusted): records and sample arrays
        seen.setdefault(task_id, set()).add(result.file_name)
        yield result


def stream_job(task: JobTask, results: Any) -> int:
    """Worker side of :class:`ProcessPoolExecutor`: evaluate a job, putting each finished cell in ``results``."""
    n = 0
    for result in execute_job(task):
        # as bytes: the queue's manager process then stores them without unpickling, so it never imports torch
        # or the record's classes (290 MB of private memory for a queue; docs/BENCHMARKS.md, video memory)
        results.put((_task_id(task), pickle.dumps(result)))
        n += 1
    return n
