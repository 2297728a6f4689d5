"""Per-sample gradients with ``torch.func`` (vmap over grad): the one implementation behind DP-SGD's and MaskDP's
clipping (``defenses/dp_sgd.py``, ``defenses/maskdp.py``) and the DP audits' canary scores (``privbench.ops.dpaudit``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def per_sample_gradients(model: nn.Module, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Cross-entropy gradients of each sample of ``images (B, ...)`` with ``labels (B,)``:
    ``{name: (B, *param.shape)}`` over the trainable parameters, in ``model.named_parameters()`` order. A model
    with fixed leading stages (``SplitModel.fixed_split``, e.g. a scattering transform) runs them once outside the
    per-sample map (they have no parameters); the names are then those of the stages after them."""
    from torch.func import functional_call, grad, vmap

    split = model.fixed_split() if hasattr(model, "fixed_split") else None
    if split is not None:
        with torch.no_grad():
            images = split[0](images)
        model = split[1]
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


def _leaves(model: nn.Module) -> list[nn.Module]:
    """The modules ``model`` applies in order, if it is a (nested) ``nn.Sequential`` of leaves, else ``[]``."""
    if not isinstance(model, nn.Sequential):
        return [model] if not list(model.children()) else []
    out: list[nn.Module] = []
    for child in model:
        leaves = _leaves(child)
        if not leaves:
            return []
        out += leaves
    return out


def linear_clipped_sum(model: nn.Module, images: Tensor, labels: Tensor, max_grad_norm: float
                       ) -> dict[str, Tensor] | None:
    """``Σ_i clip_C(g_i)`` in closed form when ``model`` is a sequence whose only trainable module is a final
    ``nn.Linear`` (ScatterNet + linear after its fixed stages), else ``None``. With ``h_i`` the linear layer's input
    and ``δ_i = softmax(z_i) − onehot(y_i)`` the cross-entropy gradient at its output, sample ``i``'s gradient is
    ``δ_i h_iᵀ`` (and ``δ_i`` for the bias), of norm ``‖δ_i‖·sqrt(‖h_i‖² + 1)``, so the clipped sum is one matrix
    product (Goodfellow 2015, "Efficient per-example gradient computations"); the same numbers as
    :func:`per_sample_gradients` without materialising them (``tests/test_dp.py``)."""
    leaves = _leaves(model)
    if not leaves or not isinstance(leaves[-1], nn.Linear) or not leaves[-1].weight.requires_grad:
        return None
    if any(p.requires_grad for m in leaves[:-1] for p in m.parameters()):
        return None
    linear = leaves[-1]
    bias = linear.bias is not None and linear.bias.requires_grad  # a frozen bias is neither clipped nor returned
    with torch.no_grad():
        h = nn.Sequential(*leaves[:-1])(images) if len(leaves) > 1 else images
        if h.dim() != 2:
            return None
        delta = torch.softmax(linear(h), 1)
        delta[torch.arange(len(labels)), labels] -= 1.0
        sq = h.pow(2).sum(1) + (1.0 if bias else 0.0)
        norms = delta.norm(dim=1) * sq.sqrt()
        factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        weighted = delta * factor[:, None]
        out = {"weight": weighted.T @ h}
        if bias:
            out["bias"] = weighted.sum(0)
    return out
