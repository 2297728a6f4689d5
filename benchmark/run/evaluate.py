"""Evaluate: one job's release (built once, cached under a content-and-code hash), its utility, and each attack
run in isolation (``privbench.run.isolation``) and scored centrally (``privbench.run.scoring``).

Everything here is a function of its inputs: the driver (``privbench.run.runner``) decides what to run and writes the
records this module returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch

from privbench import __version__
from privbench.core.calibration import Units
from privbench.core.codehash import library_versions, plugin_hash
from privbench.core.contracts import Attack, AttackOutput, AttackView, Defense, RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.hashing import stable_hash
from privbench.core.images import DatasetInfo, ImageSet, Modality, Splits, Surface
from privbench.core.keys import run_key
from privbench.core.records import validate
from privbench.core.registry import ATTACKS, DATASETS, DEFENSES
from privbench.core.release import Release
from privbench.core.seeding import derive_seed, seeded
from privbench.core.specs import PluginSpec, SuiteConfig
from privbench.data import load_splits
from privbench.metrics import CostMeter
from privbench.models import build_model, correct, early_stopping_of, input_channels, train_classifier
from privbench.run.attack_child import AttackError, AttackJob
from privbench.run.cache import ArtifactCache
from privbench.run.isolation import DefenderServices, attack_stream, attack_view_release, run_attack_isolated
from privbench.run.scoring import (
    aligned_reconstructions,
    gallery_permutation,
    membership_candidates,
    nearest_released,
    pack_correct,
    release_extra,
    release_vfe,
    sample_arrays,
    score,
    training_metrics,
    utility_metrics,
)


@dataclass(frozen=True)
class EvalOptions:
    """How a job is evaluated (not what): device, LPIPS, plugin files the attack children load, torch threads."""

    device: str = "cpu"
    use_lpips: bool = True
    plugins: tuple[str, ...] = ()
    threads: int = 1
    dp_audit_trials: int = 20_000  # steps per world of the step-level DP audit (privbench.ops.dpaudit)


@dataclass
class Prepared:
    defense: Defense
    release: Release
    utility: float
    costs: dict[str, float]
    dp_audit: Optional[dict[str, Any]] = None  # privbench.ops.dpaudit.audit_defense's result, for a DP claim
    training: dict[str, Any] = field(default_factory=dict)  # the utility model's training log, if trained here
    correct: Optional[torch.Tensor] = None  # (N_test,) bool: which test samples the utility model gets right


@dataclass
class AttackResult:
    """An attack's output with the runner-side ground truth it is scored against."""

    output: AttackOutput
    truth: Optional[torch.Tensor]
    is_member: Optional[torch.Tensor]
    seconds: float
    peak_rss_mb: float


@dataclass
class CellResult:
    """A finished cell: its record (without provenance stamps) and optional sample images."""

    file_name: str
    record: dict[str, Any]
    samples: Optional[dict[str, np.ndarray]] = field(default=None)
    units: Optional[dict[str, np.ndarray]] = field(default=None)  # the calibrated advantage's per-unit evidence


def load_splits_cached(cache: ArtifactCache, suite: SuiteConfig, dataset: str, seed: int) -> Splits:
    """The dataset's seeded splits, cached on disk (raises :class:`InputError` for unsatisfiable sizes)."""
    options = dict(suite.dataset_options.get(dataset, {}))
    run = run_key()  # a submission run's splits are keyed (privbench.core.keys); its cache entries are its own
    inputs = {"dataset": dataset, "options": options, "splits": dataclasses.asdict(suite.splits), "seed": seed,
              "code": plugin_hash(DATASETS.get(dataset)), "libraries": library_versions()}
    if run is not None:
        inputs["run_key"] = hashlib.sha256(run).hexdigest()
    key = "splits-" + stable_hash(inputs)[:32]

    fields = ("images", "labels", "identities", "masks", "keypoints")

    def make() -> dict[str, Any]:
        s = load_splits(dataset, suite.splits, seed, options, run)
        state: dict[str, Any] = {"targets": s.targets, "info": {**dataclasses.asdict(s.info),
                                                                "shape": list(s.info.shape)}}
        for name in ("private", "aux", "test"):
            part = getattr(s, name)
            state[name] = {f: getattr(part, f) for f in fields if getattr(part, f) is not None}
        return state

    state, _ = cache.get_or_create(key, make)
    info = dict(state["info"])
    info["shape"] = tuple(info["shape"])
    parts = [ImageSet(**{f: state[name].get(f) for f in fields}) for name in ("private", "aux", "test")]
    return Splits(*parts, state["targets"], DatasetInfo(**info))


def shown_test(release: Release, splits: Splits, ctx: RunContext) -> ImageSet:
    """The test split as the utility model sees it: through the release's ``inference_transform`` (input-side
    defenses act at inference too; annotated clips keep their annotations for person estimators)."""
    test = splits.test
    if release.inference_transform is not None:
        shown = test if test.is_video else test.images
        test = ImageSet(release.inference_transform(shown, ctx.generator("inference")), test.labels)
    return test


def utility_model(defense: Defense, release: Release, splits: Splits, task: TaskConfig,
                  ctx: RunContext) -> torch.nn.Module:
    """The defense's ``task_model``, initialised from the seed's shared ``init_generator`` stream, untrained."""
    if release.data is None:
        raise InputError("release exposes neither a model nor data to train one on")
    with seeded(ctx.init_generator()):
        return defense.task_model(input_channels(release.data.shape), splits.info.num_classes, task)


def measure_utility(defense: Defense, release: Release, splits: Splits, task: TaskConfig, ctx: RunContext,
                    log: Optional[dict[str, Any]] = None) -> tuple[float, torch.Tensor]:
    """Top-1 test accuracy of the task model the defense prescribes, and which test samples it gets right
    (``(N_test,)`` bool, for paired tests against the reference).

    A released model is evaluated as is; otherwise the defense's ``task_model`` is trained from scratch on the
    released data with the defense's ``optimizer`` (:func:`utility_model`). Test images pass through the release's
    ``inference_transform`` (:func:`shown_test`); ``log`` receives that training's log (``train_classifier``).
    """
    model = release.model
    if model is None:
        model = train_classifier(utility_model(defense, release, splits, task, ctx), release.data,
                                 epochs=task.epochs, batch_size=task.batch_size, lr=task.lr,
                                 generator=ctx.order_generator(), device=ctx.device,
                                 optimizer=defense.optimizer, early_stopping=early_stopping_of(task), log=log)
    right = correct(model.to(ctx.device), shown_test(release, splits, ctx), ctx.device).cpu()
    return float(right.float().mean()), right


def release_key(spec: PluginSpec, splits: Splits, seed: int, task: TaskConfig, core: str) -> str:
    return "release-" + stable_hash({
        "defense": [spec.id, spec.params_dict], "data": splits.info.hash, "splits": dict(splits.info.split_hashes),
        "seed": seed, "task": dataclasses.asdict(task), "version": __version__,
        "code": [plugin_hash(DEFENSES.get(spec.id)), core], "libraries": library_versions()})[:40]


def audit_plan(seed: int, trials: int, seeds: int) -> tuple[Any, dict[str, Any]]:
    """The DP audit's plan of one seed and its JSON form (stored with the audit: another plan is redone). A
    configuration is flagged if any of its ``seeds`` seeds' audits fires, so each runs at 1 − 0.05/seeds."""
    from privbench.ops.dpaudit import AuditPlan

    plan = AuditPlan(trials=trials, seed=seed, confidence=1 - 0.05 / max(1, seeds))
    return plan, {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(plan).items()}


def audit_into(state: dict[str, Any], defense: Defense, release: Release, splits: Splits, task: TaskConfig,
               plan: Any, plan_dict: dict[str, Any]) -> None:
    """Every ε claim is audited (docs/METHODS.md, DP accounting and audits): the audit goes into ``state``."""
    from privbench.ops.dpaudit import audit_defense

    if release.meta.epsilon is not None and hasattr(defense, "training_step"):
        state["dp_audit"] = audit_defense(defense, len(splits.private), tuple(splits.info.shape),
                                          splits.private.identities, task, plan)
        state["dp_audit"]["plan"] = plan_dict


def release_entry(defense: Defense, release: Release, defense_seconds: float, utility: tuple[float, torch.Tensor],
                  utility_seconds: float, batched: int = 1, training: Optional[dict[str, Any]] = None
                  ) -> dict[str, Any]:
    """The cache entry of a built release: its state, costs, utility (top-1 and per-test-sample correctness) and
    the utility model's training log (``batched``: how many seeds were built together, each charged its share)."""
    state = defense.release_state(release)
    state["meta"]["defense_seconds"] = defense_seconds
    state["utility"], state["utility_correct"] = utility[0], utility[1].to(torch.bool)
    state["utility_seconds"], state["batched_seeds"] = utility_seconds, batched
    state["utility_training"] = dict(training or {})
    return state


def prepare(spec: PluginSpec, splits: Splits, seed: int, task: TaskConfig, cache: ArtifactCache,
            device: torch.device, core: str, dp_audit_trials: int = 20_000, dp_audit_seeds: int = 1) -> Prepared:
    """Build (or load from cache, where ``privbench.run.prebuild`` may have put the seeds of this configuration
    built together) the release of ``spec``, measure its utility, and audit its ε claim if it makes one
    (``dp_audit_trials`` steps per world; :func:`audit_plan`)."""
    plan, plan_dict = audit_plan(seed, dp_audit_trials, dp_audit_seeds)
    defense = DEFENSES.get(spec.id)(spec.params)
    ctx = RunContext(seed=seed, device=device, task=task)

    def make() -> dict[str, Any]:
        with CostMeter() as cost:
            release = defense.build(splits, ctx)
        log: dict[str, Any] = {}
        with CostMeter() as ucost:
            utility = measure_utility(defense, release, splits, task, ctx, log)
        state = release_entry(defense, release, cost.seconds, utility, ucost.seconds, training=log)
        audit_into(state, defense, release, splits, task, plan, plan_dict)
        return state

    key = release_key(spec, splits, seed, task, core)
    state, _ = cache.get_or_create(key, make)
    release = defense.restore(state, splits, ctx)
    if release.meta.epsilon is not None and hasattr(defense, "training_step") and (
            "dp_audit" not in state or state["dp_audit"].get("plan") != plan_dict):
        audit_into(state, defense, release, splits, task, plan, plan_dict)
        cache.put(key, state)
    return Prepared(defense, release, float(state["utility"]),
                    {"defense_seconds": float(state["meta"]["defense_seconds"]),
                     "utility_seconds": float(state["utility_seconds"]),
                     "batched_seeds": float(state.get("batched_seeds", 1)),
                     **({"dp_audit_seconds": float(state["dp_audit"]["step"]["seconds"]
                                                   + state["dp_audit"]["one_run"]["seconds"])}
                        if "dp_audit" in state else {})},
                    state.get("dp_audit"), dict(state.get("utility_training", {})), state.get("utility_correct"))


def exposed_surfaces(attack: type[Attack] | Attack, surfaces: frozenset[Surface]) -> frozenset[Surface]:
    return (attack.requires | (attack.uses & surfaces)) & surfaces


def defense_pipeline(defense: Defense, splits: Splits, seed: int, task: TaskConfig, device: torch.device,
                     label: str) -> tuple[str, Callable[[ImageSet, int], dict[str, torch.Tensor]]]:
    """``(identity, run)``: the defense's training pipeline as adaptive attacks query it. ``run(train, call)``
    builds the defense with ``train`` in place of the private split (fresh secret randomness per call, derived from
    the cell seed, the attack's label and the call number) and returns the released model's state dict."""
    identity = stable_hash([type(defense).__qualname__, dataclasses.asdict(defense.params),
                            plugin_hash(type(defense))])[:32]

    def run(train: ImageSet, call: int) -> dict[str, torch.Tensor]:
        own = Splits(train, splits.aux, splits.test, torch.arange(min(len(train), len(splits.targets))), splits.info)
        ctx = RunContext(seed=derive_seed(seed, "pipeline", label, call), device=device, task=task)
        model = type(defense)(defense.params).build(own, ctx).model  # a fresh instance: no state shared
        if model is None:
            raise InputError(f"{type(defense).__name__}'s pipeline releases no model")
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    return identity, run


def attack_release(attack_spec: PluginSpec, release: Release, splits: Splits, seed: int, task: TaskConfig,
                   opts: EvalOptions, cache: Optional[ArtifactCache] = None,
                   public: Optional[dict[str, Any]] = None, defense: Optional[Defense] = None) -> AttackResult:
    """Run one attack on a release in an isolated child process (``public``: the defense's public parameters).

    The child sees the release restricted to the attack's surfaces, aux data, the targets' indices, and (when the
    attack declares it) a shuffled gallery of originals or shuffled membership candidates. The ground truth of
    gallery and candidates stays here. An attack that sees a released model may also query the ``defense``'s
    training pipeline on its own data (:func:`defense_pipeline`).
    """
    cls = ATTACKS.get(attack_spec.id)
    gallery, truth = gallery_permutation(splits, seed) if cls.needs_gallery else (None, None)
    candidates, is_member = membership_candidates(splits, seed) if cls.needs_candidates else (None, None)
    exposed = exposed_surfaces(cls, release.surfaces)
    pipeline = None
    if defense is not None and Surface.MODEL in exposed:
        pipeline = defense_pipeline(defense, splits, seed, task, torch.device(opts.device), attack_spec.label)
    view = AttackView(release=attack_view_release(release, exposed, public or {},
                                                  None if pipeline is None else pipeline[0]), aux=splits.aux,
                      targets=splits.targets.clone(), image_shape=tuple(splits.info.shape),
                      num_classes=splits.info.num_classes, gallery=gallery, candidates=candidates,
                      train_size=len(splits.private))
    job = AttackJob(attack_spec.id, attack_spec.params, view, opts.device, task,
                    stream=attack_stream(seed, attack_spec.label), threads=opts.threads, plugins=opts.plugins)
    # Attack artifacts are shared by the cells of one attack code, dataset and seed (e.g. LiRA shadows across
    # defenses); the attack's key is hashed, so it names no path.
    namespace = "attack-{}-{}".format(attack_spec.id, stable_hash([plugin_hash(cls), library_versions(),
                                                                   splits.info.hash, seed])[:24])

    def memo_path(key: str) -> str:
        return f"{namespace}-{stable_hash(key)[:32]}"

    def expected_state() -> dict[str, Any]:
        with seeded(torch.Generator().manual_seed(0)):
            return build_model(task.model, input_channels(splits.info.shape), splits.info.num_classes, width=task.width).state_dict()

    services = DefenderServices(
        release, secret=derive_seed(seed, "defense-secret", "transform-oracle", attack_spec.label),
        plugins=opts.plugins, threads=opts.threads,
        memo_get=None if cache is None else (lambda key: cache.get(memo_path(key))),
        memo_put=None if cache is None else (lambda key, value: cache.put(memo_path(key), value)),
        expected_state=expected_state, pipeline=None if pipeline is None else pipeline[1])
    with CostMeter() as cost:
        out = run_attack_isolated(job, services)
    return AttackResult(out, truth, is_member, cost.seconds, cost.peak_rss_mb)


def calibrated(units: Units, seed: int) -> dict[str, Any]:
    """The record's ``metrics.calibrated`` block: raw score, no-release prior, advantage and its within-seed
    bootstrap standard error (docs/METHODS.md, Calibrated leakage); the statistic is named in the notes."""
    raw, prior, adv = units.estimate()
    return {"raw": raw, "prior": prior, "ideal": units.ideal, "advantage": adv,
            "se": float(np.sqrt(units.variance(seed))), "units": len(units)}


def dp_audit_metrics(audit: Optional[Mapping[str, Any]]) -> dict[str, float]:
    """``metrics.dp`` fields of an audit: each method's ε̂ lower bound and claim, the one-run ceiling, and whether a
    lower bound exceeds its claim (1.0: a DP violation, which fails the cell)."""
    if not audit:
        return {}
    step, run = audit["step"], audit["one_run"]
    return {"audit_step_epsilon": float(step["epsilon_lower"]), "audit_step_claim": float(step["claimed"]),
            "audit_run_epsilon": float(run["epsilon_lower"]), "audit_run_claim": float(run["claimed"]),
            "audit_run_ceiling": float(run["ceiling"]), "audit_violated": float(bool(audit["violated"])),
            "audit_trials": float(step["trials"]), "audit_confidence": float(audit.get("plan", {}).get(
                "confidence", step["confidence"]))}


def score_cell(result: AttackResult, prepared: Prepared, splits: Splits, reference: Optional[Prepared],
               use_lpips: bool, seed: int
               ) -> tuple[dict[str, Any], Optional[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Central scoring of one attack result: ``({metrics, notes}, sample images or None, units arrays)``."""
    out, release = result.output, prepared.release
    control = None
    if out.per_gallery is not None:  # one answer per original, chosen with the original: a best-of-many match
        if result.truth is None or len(out.per_gallery) != len(splits.private):
            raise ValueError("per_gallery needs needs_gallery and one reconstruction per gallery image")
        out = dataclasses.replace(out, reconstructions=out.per_gallery[result.truth], per_gallery=None)
        held_out = splits.test.images[: len(splits.targets)]
        control = (nearest_released(release, held_out), held_out)
    mask = release.mask[splits.targets] if release.mask is not None else None
    aligned = aligned_reconstructions(out, splits, release.gradients) if out.reconstructions is not None else None
    if aligned is not None and control is not None:
        aligned = dataclasses.replace(aligned, control=control)
    privacy, notes, units = score(out, splits, result.truth, use_lpips, mask=mask, is_member=result.is_member,
                                  oracle=release.gradients, aligned=aligned)
    cal = calibrated(units, seed)
    notes["calibrated.statistic"] = units.statistic
    extra_numbers, extra_texts = release_extra(release.meta.extra)
    n_test = len(splits.test)
    metrics: dict[str, Any] = {
        "privacy": privacy,
        "calibrated": cal,
        "leakage": cal["advantage"],
        "utility": {**utility_metrics(prepared, reference, n_test), **training_metrics(prepared, extra_numbers)},
        "bitrate": {"bits_per_image": release.meta.bits_per_image},
        "release": {**extra_numbers, **release_vfe(release, splits)},
        "cost": {**prepared.costs, "attack_seconds": result.seconds, "peak_rss_mb": result.peak_rss_mb},
    }
    notes.update(extra_texts)
    if release.meta.epsilon is not None:
        metrics["dp"] = {"epsilon": release.meta.epsilon, "delta": release.meta.delta,
                         **{k: float(v) for k, v in release.meta.extra.items()  # both accountants, per person
                            if k in ("epsilon_rdp", "epsilon_pld", "epsilon_person") and v is not None},
                         **dp_audit_metrics(prepared.dp_audit)}
        notes["dp.accountant"] = str(release.meta.accountant)
    samples = None
    if aligned is not None:
        samples = sample_arrays(splits, release, aligned.rec, aligned.originals,
                                out.sources is None and out.class_labels is None)
    answers = {} if prepared.correct is None else {"test_correct": pack_correct(prepared.correct)}
    return {"metrics": metrics, "notes": notes, "answers": answers}, samples, units.arrays()


def iter_job(suite: SuiteConfig, dataset: str, seed: int, defense: PluginSpec, attacks: tuple[PluginSpec, ...],
             opts: EvalOptions, cache: ArtifactCache, core: str,
             make_record: Callable[[PluginSpec, Splits], dict[str, Any]]) -> Iterator[CellResult]:
    """Evaluate one job's cells, yielding each as soon as it is finished (so a killed run loses at most the cell
    in progress); ``make_record(attack_spec, splits)`` gives each cell's record skeleton.

    Incompatible pairs become ``skipped``; any exception in a cell (a plugin's ``InputError``, a plugin constructor,
    a record that fails validation, e.g. a NaN metric) becomes a ``failed`` record with its type and message, and a
    failed defense or reference build fails the job's remaining cells.
    """
    device = torch.device(opts.device)
    splits = load_splits_cached(cache, suite, dataset, seed)
    defense_cls = DEFENSES.get(defense.id)
    modality = Modality.of(tuple(splits.info.shape))
    prepared: Optional[Prepared] = None
    reference: Optional[Prepared] = None
    defense_error: Optional[str] = None
    for spec in attacks:
        record = make_record(spec, splits)
        file_name = record.pop("_file_name")
        samples = units = None
        try:
            attack = ATTACKS.get(spec.id)(spec.params)
            reason = (defense_cls.handles(modality) or attack.handles(modality)
                      or attack.compatible(defense_cls.surfaces))
        except Exception as e:  # a plugin's constructor or compatible() failed
            record.update(status="failed", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6))
            yield CellResult(file_name, record)
            continue
        if reason is not None:
            record.update(status="skipped", reason=reason)
        elif defense_error is not None:
            record.update(status="failed", reason=defense_error)
        else:
            try:
                if prepared is None:
                    built = prepare(defense, splits, seed, suite.task, cache, device, core, opts.dp_audit_trials,
                                    len(suite.seeds))
                    ref = PluginSpec(suite.reference, DEFENSES.get(suite.reference).Params())
                    reference = prepare(ref, splits, seed, suite.task, cache, device, core)
                    prepared = built  # only once both the defense and the reference are built
                result = attack_release(spec, prepared.release, splits, seed, suite.task, opts, cache,
                                        prepared.defense.public_info(splits.info.shape), prepared.defense)
                scored, samples, units = score_cell(result, prepared, splits, reference, opts.use_lpips, seed)
                candidate = {**record, **scored}
                validate(candidate, f"cell {record['cell_id']}")  # e.g. a NaN metric fails this cell only
                record = candidate
                if prepared.dp_audit and prepared.dp_audit["violated"]:
                    step, run = prepared.dp_audit["step"], prepared.dp_audit["one_run"]
                    record.update(status="failed", reason=(
                        f"DP violation: audited ε̂ {step['epsilon_lower']:.3f} per step (claim "
                        f"{step['claimed']:.3f}), {run['epsilon_lower']:.3f} per run (claim {run['claimed']:.3f}) "
                        f"at {step['confidence']:.1%}"))
            except AttackError as e:
                record.update(status="failed", reason=f"{e.type_name}: {e}", traceback=e.remote_traceback)
            except Exception as e:  # a crashed cell is a 'failed' record with its reason, never a silent skip
                msg = f"{type(e).__name__}: {e}"
                record.update(status="failed", reason=msg, traceback=traceback.format_exc(limit=6))
                samples = units = None
                if prepared is None:
                    defense_error = f"defense failed: {msg}"
        ok = record["status"] == "ok"
        yield CellResult(file_name, record, samples if ok else None, units if ok else None)
