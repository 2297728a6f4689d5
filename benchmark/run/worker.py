"""What a worker runs (in whatever process an executor chose): its start-up, the evaluation of one job with every
record stamped with its provenance, and the ``failed`` records of a job that crashed. Also the run's options and the
task a worker receives, plain data the driver builds (:mod:`privbench.run.runner`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from privbench.core.errors import InputError
from privbench.core.images import Splits
from privbench.core.provenance import machine, provenance
from privbench.core.records import SCHEMA_VERSION
from privbench.core.registry import ATTACKS, DEFENSES
from privbench.core.specs import PluginSpec, SuiteConfig
from privbench.run.cache import ArtifactCache
from privbench.run.evaluate import CellResult, EvalOptions, iter_job
from privbench.run.plan import Cell, Job
from privbench.run.startup import start_process


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
    # build the seeds of each defense configuration together (privbench.run.prebuild); None: on a GPU only (on a
    # 2-core CPU it measured 1.15x slower than one by one: docs/BENCHMARKS.md, seeds together)
    batch_seeds: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.dp_audit_trials < 200:
            raise InputError(f"--dp-audit-trials must be at least 200, got {self.dp_audit_trials}")




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
    start_process(threads, plugins, driver)


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
