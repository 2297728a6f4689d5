"""Training and evaluation loops for task models (CPU-first, device-correct)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.errors import InputError
from privbench.core.images import ImageSet


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the accuracy on a validation split carved from the training data (``fraction`` of it, drawn
    with the training generator) has not improved for ``patience`` epochs, and keep the best epoch's weights;
    ``epochs`` is then the largest budget. The schedule is the full budget's, so stopping changes nothing before
    the stop."""

    patience: int
    fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.patience < 1 or not 0 < self.fraction < 0.5:
            raise InputError(f"early stopping needs patience >= 1 and 0 < fraction < 0.5, got {self.patience}, "
                             f"{self.fraction}")

    def carve(self, data: ImageSet, generator: torch.Generator) -> tuple[ImageSet, ImageSet]:
        """``(train, validation)``: a random ``fraction`` of ``data`` (at least one sample) held out."""
        k = max(1, round(self.fraction * len(data)))
        perm = torch.randperm(len(data), generator=generator)
        return data.subset(perm[k:]), data.subset(perm[:k])


def early_stopping_of(task: Any) -> Optional[EarlyStopping]:
    """The :class:`EarlyStopping` of a ``TaskConfig`` (``None`` when its ``patience`` is 0)."""
    return EarlyStopping(task.patience, task.validation) if task.patience else None


class Tracker:
    """Best validation accuracy so far of one model (:class:`EarlyStopping`): ``update(epoch, acc, model)``
    keeps a copy of the weights on a strict improvement; :attr:`stopped` once ``patience`` epochs brought none."""

    def __init__(self, rule: EarlyStopping) -> None:
        self.rule, self.best, self.best_epoch, self.epochs, self.state = rule, -1.0, 0, 0, None

    def update(self, epoch: int, acc: float, model: nn.Module) -> None:
        self.epochs = epoch
        if acc > self.best:
            self.best, self.best_epoch, self.state = acc, epoch, copy.deepcopy(model.state_dict())

    @property
    def stopped(self) -> bool:
        return self.epochs - self.best_epoch >= self.rule.patience

    def log(self) -> dict[str, float]:
        return {"epochs_run": float(self.epochs), "best_epoch": float(self.best_epoch), "val_top1": self.best}


def memory_format(images: Tensor, channels_last: bool = True) -> torch.memory_format:
    """Channels-last for image batches ``(N, C, H, W)`` (mkldnn's NHWC convolutions and pooling: 1.4-1.5× on
    ConvNet and ResNet-8 training, docs/BENCHMARKS.md), the default layout otherwise (clips, or ``channels_last``
    off). The layouts sum in different orders: one step's gradients agree to ~3e-6 relative, and training then
    drifts apart as it does under any round-off (Adam amplifies it), so bit-level comparisons pick one layout."""
    return torch.channels_last if channels_last and images.dim() == 4 else torch.contiguous_format


def train_classifier(model: nn.Module, data: ImageSet, *, epochs: int, batch_size: int, lr: float,
                     generator: torch.Generator, device: torch.device,
                     augment: Optional[Callable[[Tensor], Tensor]] = None,
                     optimizer: Optional[Callable[..., torch.optim.Optimizer]] = None,
                     penalty: Optional[Callable[[nn.Module], Tensor]] = None,
                     early_stopping: Optional[EarlyStopping] = None,
                     log: Optional[dict[str, Any]] = None, channels_last: bool = True) -> nn.Module:
    """Train ``model`` with ``optimizer(params, lr)`` (default Adam), a cosine-annealed learning rate and
    cross-entropy on ``data`` (plus ``penalty(model)``, a scalar added to every step's loss, if given), for
    ``epochs`` or until ``early_stopping`` ends it (then with the best validation epoch's weights).

    ``log`` (if given) receives ``train_top1`` (on the samples trained on) and, with early stopping,
    ``epochs_run``, ``best_epoch`` and ``val_top1``. Returns the model in eval mode on ``device``.
    """
    layout = memory_format(data.images, channels_last)
    model.to(device).to(memory_format=layout).train()
    tracker = None
    if early_stopping is not None:
        data, val = early_stopping.carve(data, generator)
        tracker = Tracker(early_stopping)
    opt = (optimizer or torch.optim.Adam)(model.parameters(), lr=lr)
    n = len(data)
    steps = epochs * sum(1 for i in range(0, n, batch_size) if min(batch_size, n - i) >= 2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:
                continue
            x = data.images[idx].to(device).contiguous(memory_format=layout)
            if augment is not None:
                x = augment(x)
            loss = F.cross_entropy(model(x), data.labels[idx].to(device))
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if tracker is not None:
            tracker.update(epoch, accuracy(model, val, device), model)
            model.train()
            if tracker.stopped:
                break
    if tracker is not None and tracker.state is not None:
        model.load_state_dict(tracker.state)
        if log is not None:
            log.update(tracker.log())
    if log is not None:
        log["train_top1"] = accuracy(model, data, device)
    return model.eval()


@torch.no_grad()
def map_batched(fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device, batch_size: int = 256) -> Tensor:
    """``fn`` over ``x`` in batches on ``device`` without gradients; the result is concatenated on the CPU."""
    return torch.cat([fn(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def predict(model: nn.Module, images: Tensor, device: torch.device, batch_size: int = 512) -> Tensor:
    """Logits ``(N, K)`` on the CPU."""
    return map_batched(model.eval(), images, device, batch_size)


def accuracy(model: nn.Module, data: ImageSet, device: torch.device) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float(correct(model, data, device).float().mean())


def correct(model: nn.Module, data: ImageSet, device: torch.device) -> Tensor:
    """``(N,)`` bool: whether each sample's top-1 prediction is its label (paired tests compare two of these)."""
    return predict(model, data.images, device).argmax(1) == data.labels
