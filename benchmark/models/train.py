"""Training and evaluation loops for task models (CPU-first, device-correct)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.images import ImageSet


def train_classifier(model: nn.Module, data: ImageSet, *, epochs: int, batch_size: int, lr: float,
                     generator: torch.Generator, device: torch.device,
                     augment: Optional[Callable[[Tensor], Tensor]] = None,
                     optimizer: Optional[Callable[..., torch.optim.Optimizer]] = None,
                     penalty: Optional[Callable[[nn.Module], Tensor]] = None) -> nn.Module:
    """Train ``model`` with ``optimizer(params, lr)`` (default Adam), a cosine-annealed learning rate and
    cross-entropy on ``data`` (plus ``penalty(model)``, a scalar added to every step's loss, if given).

    Returns the model in eval mode on ``device``.
    """
    model.to(device).train()
    opt = (optimizer or torch.optim.Adam)(model.parameters(), lr=lr)
    n = len(data)
    steps = epochs * sum(1 for i in range(0, n, batch_size) if min(batch_size, n - i) >= 2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:
                continue
            x = data.images[idx].to(device)
            if augment is not None:
                x = augment(x)
            loss = F.cross_entropy(model(x), data.labels[idx].to(device))
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
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
    return float((predict(model, data.images, device).argmax(1) == data.labels).float().mean())
