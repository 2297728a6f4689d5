"""DP-SGD baseline (Abadi et al., CCS 2016), with the tightest valid accountant (PLD next to RDP, dp-accounting).

Each step draws a Poisson batch (every private sample independently with probability ``q = batch_size / N``),
clips each sample's gradient to ``max_grad_norm`` C (Opacus' factor ``min(1, C / (‖g_i‖ + 1e-6))`` over all
parameters), sums, adds Gaussian noise of standard deviation ``σ·C`` and divides by the expected batch size ``q·N``
(fixed, so the divisor reveals nothing); an empty batch still gets its noise step. :class:`DPSGDStep` is that step,
the same object training runs and ``privbench.ops.dpaudit`` audits. The ``gradients`` surface serves a different
release, :func:`dp_gradients`: one batch the server names (distinct indices), clipped, summed, noised and divided
by its size, which is public there; its ε (``epsilon_per_update``) is for one sample *replaced* (sensitivity 2C). Per-sample gradients come from ``torch.func`` (vmap over grad): 1.46× a plain step where Opacus' hooks
cost 1.77× (docs/BENCHMARKS.md); Opacus still validates the model and is the cross-check in the tests.

ε (``privbench.ops.accounting``): the tighter of PLD and RDP at ``delta`` for (σ, q, steps) under add/remove adjacency,
per sample and, where the data has identities, per person (all of a person's samples). ``target_epsilon`` is met
by the smallest σ whose PLD ε reaches it, for the unit ``unit`` (sample or person). BatchNorm, which mixes samples,
is removed and in-place activations are turned off.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Modality, Splits, Surface
from privbench.core.registry import DEFENSES, MODELS
from privbench.core.release import GradientMechanism, Release, ReleaseMeta, StepData
from privbench.core.seeding import seeded
from privbench.core.threats import ThreatModel
from privbench.defenses.base import ModelReleaser
from privbench.models import input_channels
from privbench.ops import accounting
from privbench.ops.persample import linear_clipped_sum, per_sample_gradients

#: Per-sample gradients are computed this many samples at a time (a batch of 8,192 ScatterNet features would hold
#: 1.3 GB of them at once); the clipped sum is the same up to float summation order.
CHUNK = 1024


def clipped_total(model: nn.Module, images: Tensor, labels: Tensor, max_grad_norm: float) -> dict[str, Tensor]:
    """:func:`clipped_sum` of the per-sample gradients of ``images (B, ...)``, computed :data:`CHUNK` samples at a
    time (``B`` ≥ 1); in closed form for a linear model (:func:`~privbench.ops.persample.linear_clipped_sum`)."""
    fast = linear_clipped_sum(model, images, labels, max_grad_norm)
    if fast is not None:
        return fast
    total: dict[str, Tensor] = {}
    for i in range(0, len(images), CHUNK):
        part = clipped_sum(per_sample_gradients(model, images[i:i + CHUNK], labels[i:i + CHUNK]), max_grad_norm)
        total = part if not total else {n: total[n] + t for n, t in part.items()}
    return total


def fixed_features(model: nn.Module, data: StepData, device: torch.device) -> tuple[nn.Module, StepData]:
    """``(what to train, what it trains on)``: for a model with fixed leading stages (``SplitModel.fixed_split``,
    e.g. ScatterNet's scattering transform, which has no parameters and no randomness) the stages after them and
    the data passed once through the fixed stages; otherwise ``model`` and ``data`` unchanged. The trained stages
    share the model's parameters, so training them trains the model; per-sample gradients are the same."""
    from privbench.models import map_batched

    split = model.fixed_split() if hasattr(model, "fixed_split") else None
    if split is None:
        return model, data
    fixed, rest = split
    public = None if data.public is None else map_batched(fixed, data.public, device)
    return rest, StepData(map_batched(fixed, data.images, device), data.labels, public)


def clipped_sum(per: dict[str, Tensor], max_grad_norm: float) -> dict[str, Tensor]:
    """``Σ_i clip_C(g_i)`` of per-sample gradients ``{name: (B, ...)}``, each sample clipped over all parameters."""
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per.values()))
    factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    return {n: torch.einsum("b,b...->...", factor, g) for n, g in per.items()}


def add_noise(total: dict[str, Tensor], std: float, generator: torch.Generator, denominator: float
              ) -> tuple[Tensor, ...]:
    """``(total + N(0, std²I)) / denominator`` per tensor, noise drawn on the CPU from ``generator``."""
    out = []
    for t in total.values():
        noise = torch.randn(t.shape, generator=generator) * std
        out.append((t + noise.to(t.device)) / denominator)
    return tuple(out)


def zeros_like_params(model: nn.Module) -> dict[str, Tensor]:
    return {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}


def poisson_batch(n: int, sample_rate: float, generator: torch.Generator) -> Tensor:
    """Indices of a Poisson sample of ``range(n)``: each independently with probability ``sample_rate``."""
    return torch.nonzero(torch.rand(n, generator=generator) < sample_rate).flatten()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass(frozen=True)
class DPSGDStep:
    """One DP-SGD step (module docstring; :class:`privbench.core.release.TrainingStep`). ``denominator``: the expected
    batch size ``q·N`` of the training set."""

    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    denominator: float
    adjacency = "add/remove one sample"

    def __call__(self, model: nn.Module, data: StepData, sampling: torch.Generator,
                 noise: torch.Generator) -> tuple[Tensor, ...]:
        batch = data.take(poisson_batch(len(data), self.sample_rate, sampling))
        dev = _device(model)
        total = (clipped_total(model, batch.images.to(dev), batch.labels.to(dev), self.max_grad_norm)
                 if len(batch) else zeros_like_params(model))
        return add_noise(total, self.noise_multiplier * self.max_grad_norm, noise, self.denominator)

    def neighbour(self, data: StepData, changed: Tensor) -> StepData:
        """Add/remove adjacency: the samples ``changed`` removed."""
        return data.take(torch.nonzero(~changed).flatten())


def dp_gradients(max_grad_norm: float, noise_multiplier: float) -> GradientMechanism:
    """The shared update of one given batch (the ``gradients`` surface: q = 1, nothing sampled, the batch size
    public): ``(Σ_i clip_C(g_i) + N(0, σ²C²I)) / B`` per parameter; one sample replaced moves it by at most 2C/B."""

    def mechanism(model: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        if len(images) == 0:
            raise InputError("dp-sgd gradients: the named batch is empty")
        total = clipped_total(model, images, labels, max_grad_norm)
        return add_noise(total, noise_multiplier * max_grad_norm, generator, float(len(images)))

    return mechanism


@dataclass(frozen=True)
class DPPlan:
    """A DP training run's schedule and noise: ``steps`` Poisson steps at ``sample_rate``, noise multiplier σ;
    ``group``: the most samples one person has (``None``: the data has no identities)."""

    sample_rate: float
    steps: int
    noise_multiplier: float
    group: Optional[int]


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, step, data: StepData, steps: int, ctx: RunContext,
                scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None) -> float:
    """Run ``steps`` of ``step`` (a :class:`~privbench.core.release.TrainingStep`) on ``data`` with the run's
    ``order_generator`` (batches) and ``dp-noise`` streams; returns the seconds it took."""
    batches, noise = ctx.order_generator(), ctx.generator("dp-noise")
    return optimise(model, opt, lambda: step(model, data, batches, noise), steps, scheduler)


def optimise(model: nn.Module, opt: torch.optim.Optimizer, update: Callable[[], tuple[Tensor, ...]], steps: int,
             scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None) -> float:
    """``steps`` optimiser steps of ``model`` (train mode), each with the gradients ``update()`` returns (one
    tensor per trainable parameter, in order); returns the seconds it took."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        grads = update()
        opt.zero_grad(set_to_none=True)
        for prm, g in zip(trainable, grads):
            prm.grad = g
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return time.perf_counter() - start


def grouped_step(grouped: nn.Module, m: int, steps: Sequence[DPSGDStep], datas: Sequence[StepData],
                 sampling: Sequence[torch.Generator], noise: Sequence[torch.Generator]) -> tuple[Tensor, ...]:
    """One :class:`DPSGDStep` of each of ``m`` models trained as one grouped model (``privbench.models.batched``):
    model ``k`` draws its Poisson batch from ``datas[k]`` with ``sampling[k]`` and its noise from ``noise[k]``, as
    ``steps[k]`` alone would. Batches of different sizes are padded with zero-weight samples; each sample's
    gradient is clipped over model ``k``'s parameters only (the per-sample ``vmap`` runs over the grouped model, so
    a row's gradient holds one sample of every model, each in its model's block). Returns the grouped update."""
    from torch.func import functional_call, grad, vmap

    from privbench.models.batched import per_model

    batches = [d.take(poisson_batch(len(d), s.sample_rate, g)) for d, s, g in zip(datas, steps, sampling)]
    params = {n: p.detach() for n, p in grouped.named_parameters() if p.requires_grad}
    size = max(len(b) for b in batches)
    if size == 0:
        totals = {n: torch.zeros_like(p) for n, p in params.items()}
    else:
        dev = next(grouped.parameters()).device
        x = torch.zeros(size, m, *datas[0].images.shape[1:], dtype=datas[0].images.dtype)
        y = torch.zeros(size, m, dtype=torch.long)
        w = torch.zeros(size, m)
        for k, b in enumerate(batches):
            x[:len(b), k], y[:len(b), k], w[:len(b), k] = b.images, b.labels, 1.0
        x, y, w = x.flatten(1, 2).to(dev), y.to(dev), w.to(dev)
        buffers = dict(grouped.named_buffers())

        def loss_one(p: dict[str, Tensor], xi: Tensor, yi: Tensor, wi: Tensor) -> Tensor:
            logits = functional_call(grouped, (p, buffers), (xi[None],)).reshape(m, -1)
            return (F.cross_entropy(logits, yi, reduction="none") * wi).sum()

        per = vmap(grad(loss_one), in_dims=(None, 0, 0, 0))(params, x, y, w)
        norms = torch.sqrt(sum(per_model(g, m, batch=True).pow(2).sum(2) for g in per.values()))  # (B, M)
        clip = torch.tensor([s.max_grad_norm for s in steps], device=dev)
        factor = (clip / (norms + 1e-6)).clamp(max=1.0)
        totals = {n: torch.einsum("bm,bmf->mf", factor, per_model(g, m, batch=True)).reshape(params[n].shape)
                  for n, g in per.items()}
    out = []
    for t in totals.values():  # each model's noise from its own stream, parameter by parameter, as one by one
        blocks = per_model(t, m)
        noisy = [(blocks[k] + (torch.randn(blocks[k].shape, generator=noise[k]) * s.noise_multiplier
                               * s.max_grad_norm).to(t.device)) / s.denominator for k, s in enumerate(steps)]
        out.append(torch.stack(noisy).reshape(t.shape))
    return tuple(out)


def with_train_top1(meta: ReleaseMeta, model: nn.Module, data: StepData, device: torch.device) -> ReleaseMeta:
    """``meta`` with the released model's accuracy on the data it trained on (``task_train_top1``, so the record
    shows the generalisation gap; ``model`` takes ``data.images``, e.g. ScatterNet features for its trained part)."""
    from privbench.models import predict

    was_training = model.training
    right = predict(model.eval(), data.images, device).argmax(1) == data.labels
    model.train(was_training)
    return dataclasses.replace(meta, extra={**meta.extra, "task_train_top1": float(right.float().mean())})


def _default_width(model: str) -> int:
    """The ``width`` default of a registered model builder."""
    import inspect

    return int(inspect.signature(MODELS.get(model)).parameters["width"].default)


def _without_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return module


@DEFENSES.register("dp-sgd")
class DPSGD(ModelReleaser):
    """DP-SGD: per-sample clipping + Gaussian noise on Poisson batches; ε per sample and per person from the
    tighter of PLD and RDP in every record."""

    modalities = frozenset({Modality.IMAGE, Modality.VIDEO})

    claims = frozenset({ThreatModel.MODEL_HOLDER, ThreatModel.SERVER})
    surfaces = frozenset({Surface.MODEL, Surface.GRADIENTS})
    strength = "noise_multiplier"
    blank_fill: ClassVar[Optional[float]] = None  # MaskDP: the constant of the blanked view its steps need

    @dataclass(frozen=True)
    class Params:
        noise_multiplier: float = 1.0
        target_epsilon: Optional[float] = None  # if set, the smallest σ whose PLD ε reaches it (overrides above)
        unit: str = "sample"  # what target_epsilon bounds: "sample", or "person" (all of one identity's samples)
        max_grad_norm: float = 1.0
        delta: float = 1e-5
        epochs: int = 0  # 0 = the suite's task epochs
        lr: float = 0.5  # SGD with momentum 0.9 (Adam at the suite's lr stayed near chance under noise)
        batch_size: int = 0  # expected Poisson batch size; 0 = the suite's task batch size
        model: str = ""  # a registered model (e.g. tanh-cnn, scatternet); "" = the suite's task model
        width: int = 0  # the model's width; 0 = the suite's task width for its model, else the model's default

        def __post_init__(self) -> None:
            if self.target_epsilon is not None and not self.target_epsilon > 0:
                raise InputError(f"target_epsilon must be > 0, got {self.target_epsilon}")
            if not self.noise_multiplier >= 0 or not self.max_grad_norm > 0:
                raise InputError(f"noise_multiplier must be >= 0 and max_grad_norm > 0 (got {self.noise_multiplier}, "
                                 f"{self.max_grad_norm})")
            if not 0 < self.delta < 1:
                raise InputError(f"delta must lie in (0, 1), got {self.delta}")
            if self.epochs < 0 or not self.lr > 0 or self.batch_size < 0 or self.width < 0:
                raise InputError("epochs, batch_size and width must be >= 0 and lr > 0")
            if self.model:
                MODELS.get(self.model)  # an unknown name fails here, naming the registered ones
            if self.unit not in ("sample", "person"):
                raise InputError(f"unit must be 'sample' or 'person', got {self.unit!r}")

    def claimed(self) -> frozenset[ThreatModel]:
        """σ = 0 is the recipe reference: no noise, no claim."""
        noisy = self.params.noise_multiplier > 0 or self.params.target_epsilon is not None
        return type(self).claims if noisy else frozenset()

    def strength_param(self) -> Optional[str]:
        return "target_epsilon" if self.params.target_epsilon is not None else "noise_multiplier"

    def recipe_reference(self) -> Optional["DPSGD.Params"]:
        """The same recipe (model without BatchNorm, SGD, clipping, Poisson sampling) at σ = 0: the fair utility
        reference, so that the drop measures the noise and not the recipe change."""
        if self.params.noise_multiplier == 0 and self.params.target_epsilon is None:
            return None
        return dataclasses.replace(self.params, noise_multiplier=0.0, target_epsilon=None)

    def task_model(self, in_channels: int, num_classes: int, task: TaskConfig) -> nn.Module:
        """The suite's task model with BatchNorm removed (it mixes samples; GroupNorm, Opacus' usual fix, cost 30 pp
        on mnist5k without any noise) and in-place activations off (they break per-sample gradients)."""
        from opacus.validators import ModuleValidator

        p = self.params
        if p.model:
            task = dataclasses.replace(task, model=p.model, width=p.width or _default_width(p.model))
        elif p.width:
            task = dataclasses.replace(task, width=p.width)
        model = _without_batchnorm(super().task_model(in_channels, num_classes, task))
        for m in model.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise InputError(f"dp-sgd: task model {task.model!r} is not compatible with per-sample clipping: "
                             f"{errors[0]}")
        return model

    def optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    def scheduler(self, opt: torch.optim.Optimizer, steps: int) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
        return None

    def gradient_mechanism(self, meta: ReleaseMeta) -> GradientMechanism:
        """One DP-SGD step on a given batch at the noise multiplier actually used."""
        return dp_gradients(self.params.max_grad_norm, float(meta.extra["noise_multiplier"]))

    def plan(self, n: int, identities: Optional[Tensor], task: TaskConfig) -> DPPlan:
        """The run's schedule for ``n`` training samples: ``q = batch_size / n``, ``round(epochs / q)`` steps, and σ
        (calibrated by PLD when ``target_epsilon`` is set, for the sample or the person)."""
        p = self.params
        if n < 1:
            raise InputError(f"{type(self).__name__}: the training set is empty")
        q = min(1.0, (p.batch_size or task.batch_size) / n)
        steps = max(1, round((p.epochs or task.epochs) / q))
        group = accounting.largest_group(identities)
        sigma = p.noise_multiplier
        if p.target_epsilon is not None:
            if p.unit == "person" and group is None:
                raise InputError("unit: person needs identities in the private split; this dataset has none")
            sigma = accounting.calibrate(p.target_epsilon, q, steps, p.delta,
                                         group=group if p.unit == "person" and group else 1)
        return DPPlan(sample_rate=q, steps=steps, noise_multiplier=float(sigma), group=group)

    def training_step(self, plan: DPPlan, n: int):
        """The :class:`~privbench.core.release.TrainingStep` this defense trains with."""
        return DPSGDStep(plan.sample_rate, plan.noise_multiplier, self.params.max_grad_norm, plan.sample_rate * n)

    def training_data(self, splits: Splits) -> tuple[StepData, Optional[ImageSet]]:
        """``(what the steps sample from, the released training set or None for the private split)``."""
        return StepData(splits.private.images, splits.private.labels), None

    def dp_meta(self, plan: DPPlan, step, seconds: float) -> ReleaseMeta:
        """The release's ε (the tighter accountant's, per sample), δ and the accounting numbers in ``extra``."""
        p = self.params
        extra: dict[str, float] = {"noise_multiplier": plan.noise_multiplier, "dp_steps": float(plan.steps),
                                   "sample_rate": plan.sample_rate, "dp_epochs": plan.steps * plan.sample_rate,
                                   "seconds_per_epoch": seconds / max(plan.steps * plan.sample_rate, 1e-9)}
        if plan.noise_multiplier <= 0:  # σ = 0 is the recipe reference: no privacy guarantee (ε = ∞)
            return ReleaseMeta(extra=extra)
        from importlib.metadata import version

        g = accounting.guarantee(plan.noise_multiplier, plan.sample_rate, plan.steps, p.delta, plan.group)
        if p.target_epsilon is not None:  # calibration must have met its target at the recorded accountant
            got = g.per_person.epsilon if p.unit == "person" and g.per_person is not None else g.per_sample.epsilon
            if got > p.target_epsilon * (1 + 1e-9):
                raise RuntimeError(f"calibrated σ = {plan.noise_multiplier} gives ε = {got} > target "
                                   f"{p.target_epsilon}: an accounting bug, not a result")
        extra.update(g.extra())
        return ReleaseMeta(epsilon=g.per_sample.epsilon, delta=p.delta,
                           accountant=f"dp-accounting {version('dp-accounting')} {g.per_sample.accountant}, "
                                      f"{step.adjacency}",
                           extra=extra)

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        data, own = self.training_data(splits)
        plan = self.plan(len(data), splits.private.identities, ctx.task)
        step = self.training_step(plan, len(data))
        with seeded(ctx.init_generator()):
            model = self.task_model(input_channels(splits.info.shape), splits.info.num_classes,
                                    ctx.task).to(ctx.device)
        trained, features = fixed_features(model, data, ctx.device)
        opt = self.optimizer(model.parameters(), self.params.lr)
        seconds = train_steps(trained, opt, step, features, plan.steps, ctx, self.scheduler(opt, plan.steps))
        meta = with_train_top1(self.dp_meta(plan, step, seconds), trained, features, ctx.device)
        return self.model_release(model.eval(), own, splits, ctx, public=data.public, meta=meta)

    def build_many(self, splits: Sequence[Splits], ctxs: Sequence[RunContext]) -> list[Release]:
        """The seeds' DP-SGD runs as one grouped model (:func:`grouped_step`), when their steps are plain
        :class:`DPSGDStep` s with one schedule (same data size, hence the same rate, steps and divisor) on one
        device; otherwise one by one. Each seed keeps its own initialisation, batch and noise streams, so the
        models equal those of :meth:`build` within float tolerance (``tests/test_batched.py``)."""
        from privbench.models.batched import NotBatchable, stack_models, unstack_into

        runs = []
        for sp, ctx in zip(splits, ctxs):
            data, own = self.training_data(sp)
            plan = self.plan(len(data), sp.private.identities, ctx.task)
            runs.append((data, own, plan, self.training_step(plan, len(data))))
        schedule = {(r[2].steps, r[2].sample_rate, len(r[0]), r[0].images.shape[1:]) for r in runs}
        if (len(runs) < 2 or any(type(r[3]) is not DPSGDStep for r in runs) or len(schedule) != 1
                or len({c.device for c in ctxs}) != 1 or len({c.task for c in ctxs}) != 1):
            return super().build_many(splits, ctxs)
        models = []
        for sp, ctx in zip(splits, ctxs):
            with seeded(ctx.init_generator()):
                models.append(self.task_model(input_channels(sp.info.shape), sp.info.num_classes,
                                              ctx.task).to(ctx.device))
        try:
            if any(getattr(x, "fixed_split", lambda: None)() is not None for x in models):
                raise NotBatchable("fixed leading stages train on their features, one model at a time")
            grouped = stack_models(models)
        except NotBatchable:
            return super().build_many(splits, ctxs)
        m, steps = len(models), [r[3] for r in runs]
        sampling, noise = [c.order_generator() for c in ctxs], [c.generator("dp-noise") for c in ctxs]
        opt = self.optimizer(grouped.parameters(), self.params.lr)
        datas = [r[0] for r in runs]
        seconds = optimise(grouped, opt, lambda: grouped_step(grouped, m, steps, datas, sampling, noise),
                           runs[0][2].steps, self.scheduler(opt, runs[0][2].steps)) / m  # each seed's share
        unstack_into(grouped.eval(), models)
        return [self.model_release(x.eval(), r[1], sp, ctx, public=r[0].public,
                                   meta=with_train_top1(self.dp_meta(r[2], r[3], seconds), x, r[0], ctx.device))
                for x, r, sp, ctx in zip(models, runs, splits, ctxs)]
