"""Synthetic data from class-wise BatchNorm statistics (Soufleri, Saha & Roy, arXiv 2210.03205).

A teacher with BatchNorm is trained on the private split. For every class ``c`` and every BatchNorm layer ``l`` the
per-channel mean ``μ_l^c`` and variance ``σ²_l^c`` of the layer's input over class-``c`` private images are
recorded (teacher in eval mode, the mode it is deployed in). Noise images labelled ``c`` are then optimised so that
their own batch statistics match (DeepInversion, Yin et al., CVPR 2020):

``L = w_bn · Σ_l (‖μ_l(x_c) − μ_l^c‖₂ + ‖σ²_l(x_c) − σ²_l^c‖₂) + w_ce · CE(teacher(x), c) + w_tv · TV(x) + w_l2 · ‖x‖²``

with Adam, random jitter (circular shifts of up to ``jitter`` pixels) and optional horizontal flips, images boxed
to [0, 1]. Only the synthetic set is released (``synthetic``), plus a task model trained from scratch on it
(``model``, trained for as many optimisation steps as the private split would take; utility = its accuracy on the
real test split) and its shared updates (``gradients``, on synthetic
batches). The teacher and the statistics stay private.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.contracts import RunContext
from privbench.core.errors import InputError
from privbench.core.images import ImageSet, Splits, Surface
from privbench.core.registry import DEFENSES
from privbench.core.release import Release, ReleaseMeta
from privbench.core.threats import ThreatModel
from privbench.defenses.base import ModelReleaser
from privbench.metrics.image import total_variation
from privbench.models import accuracy


class _BNInputs:
    """Forward hooks collecting the input of every BatchNorm layer of ``model`` during one forward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.inputs: list[Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        self.inputs.append(args[0])

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def class_statistics(teacher: nn.Module, data: ImageSet, num_classes: int,
                     device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """Per BatchNorm layer: ``(mean (K, C_l), var (K, C_l))`` of its input over each class's images."""
    hooks = _BNInputs(teacher)
    sums: list[list[Tensor]] = []
    try:
        with torch.no_grad():
            for c in range(num_classes):
                x = data.images[data.labels == c]
                if len(x) == 0:
                    raise InputError(f"bn-synthetic: the private split has no image of class {c}")
                acc = None
                for i in range(0, len(x), 256):
                    hooks.inputs.clear()
                    teacher(x[i:i + 256].to(device))
                    part = [(h.transpose(0, 1).flatten(1).sum(1), h.transpose(0, 1).flatten(1).pow(2).sum(1),
                             h.transpose(0, 1).flatten(1).shape[1]) for h in hooks.inputs]
                    acc = part if acc is None else [(a[0] + b[0], a[1] + b[1], a[2] + b[2]) for a, b in zip(acc, part)]
                assert acc is not None
                sums.append([torch.stack([s / n, q / n - (s / n) ** 2]) for s, q, n in acc])
    finally:
        hooks.close()
    return [(torch.stack([sums[c][k][0] for c in range(num_classes)]),
             torch.stack([sums[c][k][1] for c in range(num_classes)])) for k in range(len(sums[0]))]


@DEFENSES.register("bn-synthetic")
class BNSynthetic(ModelReleaser):
    """Release synthetic images matching class-wise BatchNorm statistics of a private teacher (Soufleri et al.)."""

    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.MODEL_HOLDER, ThreatModel.SERVER, ThreatModel.LINKER})
    surfaces = frozenset({Surface.SYNTHETIC, Surface.MODEL, Surface.GRADIENTS})

    @dataclass(frozen=True)
    class Params:
        per_class: int = 50
        iterations: int = 300
        lr: float = 0.05
        w_bn: float = 1.0
        w_ce: float = 1.0
        w_tv: float = 0.1
        w_l2: float = 1e-4
        jitter: int = 2
        flip: bool = False  # horizontal flips (off by default: digits are not mirror-symmetric)

        def __post_init__(self) -> None:
            if self.per_class < 1 or self.iterations < 1:
                raise InputError("per_class and iterations must be >= 1")
            if not self.lr > 0 or min(self.w_bn, self.w_ce, self.w_tv, self.w_l2) < 0 or self.jitter < 0:
                raise InputError("lr must be > 0; loss weights and jitter must be >= 0")

    def synthesize(self, teacher: nn.Module, stats: list[tuple[Tensor, Tensor]], shape: tuple[int, int, int],
                   ctx: RunContext) -> tuple[ImageSet, float]:
        """Optimise ``per_class`` images per class; returns the set and the final BN-statistics loss."""
        p, dev = self.params, ctx.device
        k = stats[0][0].shape[0]
        g = ctx.generator("synthesis")
        labels = torch.arange(k).repeat_interleave(p.per_class)
        x = torch.rand((k * p.per_class,) + tuple(shape), generator=g).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=p.lr)
        targets = [(m.to(dev), v.to(dev)) for m, v in stats]
        hooks = _BNInputs(teacher)
        y = labels.to(dev)
        bn_loss = torch.zeros(())
        try:
            for _ in range(p.iterations):
                dx, dy = (int(v) for v in torch.randint(-p.jitter, p.jitter + 1, (2,), generator=g))
                xa = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
                if p.flip and bool(torch.rand((), generator=g) < 0.5):
                    xa = xa.flip(3)
                hooks.inputs.clear()
                logits = teacher(xa)
                bn_loss = torch.zeros((), device=dev)
                for h, (mu_c, var_c) in zip(hooks.inputs, targets):
                    hc = h.reshape(k, p.per_class, h.shape[1], -1).transpose(1, 2).flatten(2)  # (K, C, n·h·w)
                    bn_loss = bn_loss + torch.linalg.vector_norm(hc.mean(2) - mu_c, dim=1).mean() \
                        + torch.linalg.vector_norm(hc.var(2, unbiased=False) - var_c, dim=1).mean()
                loss = (p.w_bn * bn_loss + p.w_ce * F.cross_entropy(logits, y)
                        + p.w_tv * total_variation(x).mean() + p.w_l2 * x.pow(2).mean())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
        finally:
            hooks.close()
        return ImageSet(x.detach().cpu(), labels), float(bn_loss.detach())

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        probe = self.task_model(splits.info.shape[0], splits.info.num_classes, ctx.task)
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in probe.modules()):
            raise InputError(f"bn-synthetic needs a task model with BatchNorm layers; {ctx.task.model!r} has none "
                             "(use convnet or a resnet)")
        teacher = self.train_task_model(splits.private, splits, ctx)
        teacher = teacher.to(ctx.device).eval().requires_grad_(False)
        stats = class_statistics(teacher, splits.private, splits.info.num_classes, ctx.device)
        synthetic, bn_loss = self.synthesize(teacher, stats, splits.info.shape, ctx)
        teacher_acc = accuracy(teacher, splits.test, ctx.device)
        # Same number of optimisation steps as training on the private split (assumption: the paper's budget for the
        # from-scratch model is not stated; equal steps keep the comparison with real data fair).
        epochs = math.ceil(ctx.task.epochs * len(splits.private) / len(synthetic))
        student = self.train_task_model(synthetic, splits, ctx, epochs=epochs)
        meta = ReleaseMeta(extra={"teacher_top1": teacher_acc, "bn_loss_final": bn_loss,
                                  "synthetic_images": float(len(synthetic)), "student_epochs": float(epochs)})
        return self.model_release(student, synthetic, splits, ctx, synthetic=synthetic, meta=meta)
