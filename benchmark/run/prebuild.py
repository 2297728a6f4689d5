"""Building the seeds of one defense configuration together, before the cells run.

The cells of a (dataset, defense configuration) differ only in their seed, and each seed's release trains a task
model of the same architecture on data of the same size. The driver builds the pending seeds of each configuration
(and of the suite's reference) in one pass: ``Defense.build_many`` trains the seeds' released models as one grouped
model (``privbench.models.batched``), and the utility models of data releases are trained together here. Each seed's
entry goes into the artifact cache under the key :func:`~privbench.run.evaluate.prepare` looks up, so the cells
then find their releases built; the results equal one-by-one builds within float tolerance (tests/test_batched.py).
A configuration whose batched build fails is left to the cells, which build it one by one and record the error.
The runner does this by default on a GPU only (``RunOptions.batch_seeds``): on a 2-core CPU the grouped kernels
cost what the separate ones cost and the run measured 1.15× slower (docs/BENCHMARKS.md, seeds together).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

from privbench.core.contracts import Defense, RunContext, TaskConfig
from privbench.core.images import Modality, Splits
from privbench.core.registry import ATTACKS, DEFENSES
from privbench.core.release import Release
from privbench.core.specs import PluginSpec, SuiteConfig
from privbench.models import correct, early_stopping_of
from privbench.models.batched import train_classifiers
from privbench.run.cache import ArtifactCache
from privbench.run.evaluate import (
    audit_into,
    audit_plan,
    release_entry,
    release_key,
    shown_test,
    utility_model,
)


@dataclass
class PrebuildSummary:
    """What the driver built ahead of the cells: ``groups`` configurations, ``seeds`` releases in all, the seconds
    it took, and the configurations left to the cells (``failed``: label and reason)."""

    groups: int = 0
    seeds: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)


def utilities(defense: Defense, releases: Sequence[Release], splits: Sequence[Splits], task: TaskConfig,
              ctxs: Sequence[RunContext], logs: Sequence[dict[str, Any]]) -> list[tuple[float, torch.Tensor]]:
    """:func:`~privbench.run.evaluate.measure_utility` of each seed (``logs[i]``: its training log); the utility
    models of data releases (no released model) train together, each from its own initialisation and
    data-order streams (``RunContext.init_generator``)."""
    pending = [i for i, r in enumerate(releases) if r.model is None]
    trained = {}
    if pending:
        models = [utility_model(defense, releases[i], splits[i], task, ctxs[i]) for i in pending]
        models = train_classifiers(models, [releases[i].data for i in pending], epochs=task.epochs,
                                   batch_size=task.batch_size, lr=task.lr, device=ctxs[0].device,
                                   generators=[ctxs[i].order_generator() for i in pending],
                                   optimizer=defense.optimizer, early_stopping=early_stopping_of(task),
                                   logs=[logs[i] for i in pending])
        trained = dict(zip(pending, models))
    out = []
    for i, (r, sp, ctx) in enumerate(zip(releases, splits, ctxs)):
        model = trained.get(i, r.model)
        right = correct(model.to(ctx.device), shown_test(r, sp, ctx), ctx.device).cpu()
        out.append((float(right.float().mean()), right))
    return out


def build_group(spec: PluginSpec, splits: Sequence[Splits], seeds: Sequence[int], task: TaskConfig,
                cache: ArtifactCache, device: torch.device, core: str, dp_audit_trials: int, dp_audit_seeds: int
                ) -> None:
    """Build the seeds ``seeds`` of ``spec`` together and put each seed's cache entry."""
    defense = DEFENSES.get(spec.id)(spec.params)
    ctxs = [RunContext(seed=s, device=device, task=task) for s in seeds]
    start = time.perf_counter()
    releases = defense.build_many(splits, ctxs)
    built = time.perf_counter()
    logs: list[dict[str, Any]] = [{} for _ in seeds]
    utility = utilities(defense, releases, splits, task, ctxs, logs)
    each_build, each_utility = (built - start) / len(seeds), (time.perf_counter() - built) / len(seeds)
    for release, sp, seed, u, log in zip(releases, splits, seeds, utility, logs):
        state = release_entry(defense, release, each_build, u, each_utility, batched=len(seeds), training=log)
        plan, plan_dict = audit_plan(seed, dp_audit_trials, dp_audit_seeds)
        audit_into(state, defense, release, sp, task, plan, plan_dict)
        cache.put(release_key(spec, sp, seed, task, core), state)


def prebuild(suite: SuiteConfig, groups: Iterable[tuple[str, PluginSpec, Sequence[int]]], cache: ArtifactCache,
             device: torch.device, core: str, dp_audit_trials: int,
             load: Callable[[str, int], Splits], progress: Optional[Callable[[int], None]] = None
             ) -> PrebuildSummary:
    """Build each ``(dataset, spec, seeds)`` group's seeds whose cache entry is missing, two or more at a time
    (one seed gains nothing from batching: its cell builds it). ``load(dataset, seed)`` gives the splits."""
    summary = PrebuildSummary()
    start = time.perf_counter()
    for dataset, spec, seeds in groups:
        splits = {s: load(dataset, s) for s in seeds}
        cls = DEFENSES.get(spec.id)
        handled = not any(cls.handles(Modality.of(tuple(sp.info.shape))) for sp in splits.values())  # else skipped
        todo = [s for s in seeds if handled
                and cache.get(release_key(spec, splits[s], s, suite.task, core)) is None]
        if len(todo) >= 2:
            try:
                build_group(spec, [splits[s] for s in todo], todo, suite.task, cache, device, core,
                            dp_audit_trials, len(suite.seeds))
                summary.groups += 1
                summary.seeds += len(todo)
            except Exception as e:  # the cells build it one by one and record what fails
                summary.failed.append(f"{dataset}/{spec.label}: {type(e).__name__}: {e}")
        if progress is not None:
            progress(1)
    summary.seconds = time.perf_counter() - start
    return summary


def groups_of(tasks: Iterable[Any], reference: str) -> list[tuple[str, PluginSpec, list[int]]]:
    """``(dataset, defense spec, seeds)`` of the pending jobs ``tasks`` (:class:`~privbench.run.worker.JobTask`),
    the suite's ``reference`` defense included for every dataset with a pending job; jobs whose every cell is
    skipped (no attack compatible with the defense's surfaces) are left out."""
    found: dict[tuple[str, str], tuple[PluginSpec, set[int]]] = {}
    ref = PluginSpec(reference, DEFENSES.get(reference).Params())
    for task in tasks:
        job = task.job
        surfaces = DEFENSES.get(job.defense.id).surfaces
        if all(ATTACKS.get(a.id)(a.params).compatible(surfaces) for a in job.attacks):
            continue  # every cell is skipped: nothing to build
        for spec in (job.defense, ref):
            key = (job.dataset, json_key(spec))
            found.setdefault(key, (spec, set()))[1].add(job.seed)
    return [(d, spec, sorted(seeds)) for (d, _), (spec, seeds) in found.items()]


def json_key(spec: PluginSpec) -> str:
    """A configuration's identity (id and parameters), whatever its label."""
    return json.dumps([spec.id, spec.params_dict], sort_keys=True, default=str)
