"""DP-SGD baseline (Abadi et al., CCS 2016) with Opacus (Yousefpour et al., arXiv 2109.12298).

The task model is trained on the private split with per-sample gradient clipping to ``max_grad_norm`` and Gaussian
noise of standard deviation ``noise_multiplier · max_grad_norm``, Poisson sampling of batches; ε is read from
Opacus' RDP accountant at ``delta`` (or the noise is calibrated by Opacus to reach ``target_epsilon``). BatchNorm,
which mixes samples, is replaced by GroupNorm (Opacus' ``ModuleValidator.fix``) and in-place activations are
turned off. The shared update (``gradients``)
is one step of the same mechanism: clipped per-sample gradients, summed, noised, divided by the batch size.
"""

from __future__ import annotations

import warnings
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.contracts import (GradientMechanism, Modality, Release, ReleaseMeta, RunContext, Splits, Surface,
                                 TaskConfig)
from benchmark.threats import ThreatModel
from benchmark.errors import InputError
from benchmark.models import input_channels
from benchmark.seeding import seeded

from benchmark.registry import DEFENSES
from .base import ModelReleaser


def dp_gradients(max_grad_norm: float, noise_multiplier: float) -> GradientMechanism:
    """The DP-SGD update of one batch: ``(Σ_i clip_C(g_i) + N(0, σ²C²I)) / B`` per parameter, with Opacus' clipping
    factor ``min(1, C / (‖g_i‖ + 1e-6))`` over all parameters of sample ``i``."""

    def mechanism(model: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        from torch.func import functional_call, grad, vmap

        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        buffers = dict(model.named_buffers())

        def loss_one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(functional_call(model, (p, buffers), (x[None],)), y[None])

        per = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, images, labels)
        norms = torch.sqrt(sum(per[n].flatten(1).pow(2).sum(1) for n in names))
        factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        out = []
        for n in names:
            total = torch.einsum("b,b...->...", factor, per[n])
            noise = torch.randn(total.shape, generator=generator) * (noise_multiplier * max_grad_norm)
            out.append((total + noise.to(total.device)) / len(images))
        return tuple(out)

    return mechanism


def _without_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return module


@DEFENSES.register("dp-sgd")
class DPSGD(ModelReleaser):
    """DP-SGD with Opacus: per-sample clipping + Gaussian noise; ε from the RDP accountant in every record."""

    modalities = frozenset({Modality.IMAGE, Modality.VIDEO})

    claims = frozenset({ThreatModel.MODEL_HOLDER, ThreatModel.SERVER})
    surfaces = frozenset({Surface.MODEL, Surface.GRADIENTS})
    strength = "noise_multiplier"

    @dataclass(frozen=True)
    class Params:
        noise_multiplier: float = 1.0
        target_epsilon: Optional[float] = None  # if set, Opacus calibrates the noise to reach it (overrides above)
        max_grad_norm: float = 1.0
        delta: float = 1e-5
        epochs: int = 0  # 0 = the suite's task epochs
        lr: float = 0.5  # SGD with momentum 0.9 (Adam at the suite's lr stayed near chance under noise)

        def __post_init__(self) -> None:
            if self.target_epsilon is not None and not self.target_epsilon > 0:
                raise InputError(f"target_epsilon must be > 0, got {self.target_epsilon}")
            if not self.noise_multiplier >= 0 or not self.max_grad_norm > 0:
                raise InputError(f"noise_multiplier must be >= 0 and max_grad_norm > 0 (got {self.noise_multiplier}, "
                                 f"{self.max_grad_norm})")
            if not 0 < self.delta < 1:
                raise InputError(f"delta must lie in (0, 1), got {self.delta}")
            if self.epochs < 0 or not self.lr > 0:
                raise InputError("epochs must be >= 0 and lr > 0")

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
        on mnist5k without any noise) and in-place activations off (they break Opacus' per-sample hooks)."""
        from opacus.validators import ModuleValidator

        model = _without_batchnorm(super().task_model(in_channels, num_classes, task))
        for m in model.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise InputError(f"dp-sgd: task model {task.model!r} is not compatible with Opacus: {errors[0]}")
        return model

    def optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    def gradient_mechanism(self, meta: ReleaseMeta) -> GradientMechanism:
        """One DP-SGD step at the noise multiplier actually used (calibrated by Opacus for ``target_epsilon``)."""
        return dp_gradients(self.params.max_grad_norm, float(meta.extra["noise_multiplier"]))

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        from torch.utils.data import DataLoader, TensorDataset

        p, t = self.params, ctx.task
        epochs = p.epochs or t.epochs
        with seeded(ctx.generator("task-init")):
            model = self.task_model(input_channels(splits.info.shape), splits.info.num_classes, t).to(ctx.device)
        opt = self.optimizer(model.parameters(), p.lr)
        loader = DataLoader(TensorDataset(splits.private.images, splits.private.labels), batch_size=t.batch_size,
                            generator=ctx.generator("task-train"))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")  # seeded on purpose: reproducible
            warnings.filterwarnings("ignore", message="Full backward hook is firing")  # inputs need no gradient
            return self._train(model, opt, loader, epochs, splits, ctx)

    def _train(self, model: nn.Module, opt: torch.optim.Optimizer, loader: Any, epochs: int, splits: Splits,
               ctx: RunContext) -> Release:
        import opacus
        from opacus import PrivacyEngine

        p = self.params
        engine = PrivacyEngine(accountant="rdp")
        common = dict(module=model, optimizer=opt, data_loader=loader, max_grad_norm=p.max_grad_norm,
                      noise_generator=ctx.generator("dp-noise") if ctx.device.type == "cpu" else None)
        if p.target_epsilon is not None:
            module, opt, loader = engine.make_private_with_epsilon(**common, target_epsilon=p.target_epsilon,
                                                                   target_delta=p.delta, epochs=epochs)
        else:
            module, opt, loader = engine.make_private(**common, noise_multiplier=p.noise_multiplier)
        module.train()
        for _ in range(epochs):
            for x, y in loader:
                if len(x) == 0:
                    continue
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(module(x.to(ctx.device)), y.to(ctx.device)).backward()
                opt.step()
        noisy = float(opt.noise_multiplier) > 0  # σ = 0 is the recipe reference: no privacy guarantee (ε = ∞)
        eps = engine.get_epsilon(p.delta) if noisy else None

        extra = {"noise_multiplier": float(opt.noise_multiplier), "dp_epochs": float(epochs)}
        if noisy:  # each shared update the gradients surface serves is its own full-batch (q = 1) Gaussian release
            from opacus.accountants import RDPAccountant

            one = RDPAccountant()
            one.history = [(float(opt.noise_multiplier), 1.0, 1)]
            extra["epsilon_per_update"] = float(one.get_epsilon(p.delta))
        meta = ReleaseMeta(epsilon=None if eps is None else float(eps), delta=p.delta if noisy else None,
                           accountant=f"opacus {opacus.__version__} rdp" if noisy else None, extra=extra)
        if hasattr(module, "remove_hooks"):
            module.remove_hooks()  # Opacus' per-sample hooks must not stay on the released model
        trained = module._module if hasattr(module, "_module") else module
        return self.model_release(trained.eval(), None, splits, ctx, meta=meta)
