"""Per-sample gradients with ``torch.func`` (vmap over grad): the one implementation behind DP-SGD's and MaskDP's
clipping (``defenses/dp_sgd.py``, ``defenses/maskdp.py``) and the DP audits' canary scores (``privbench.ops.dpaudit``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def per_sample_gradients(model: nn.Module, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Cross-entropy gradients of each sample of ``images (B, ...)`` with ``labels (B,)``:
    ``{name: (B, *param.shape)}`` over the trainable parameters, in ``model.named_parameters()`` order."""
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (x[None],)), y[None])

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, images, labels)


def flat_per_sample_gradients(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """:func:`per_sample_gradients` flattened and concatenated: ``(B, P)`` float64 on the CPU."""
    dev = next(model.parameters()).device
    per = per_sample_gradients(model, images.to(dev), labels.to(dev))
    return torch.cat([g.flatten(1) for g in per.values()], 1).double().cpu()
