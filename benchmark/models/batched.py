"""Training several same-shaped models in one pass: M models become one *grouped* model whose channels are the M
models' channels side by side.

A convolution ``Conv2d(C, D, groups=g)`` of each model becomes ``Conv2d(M·C, M·D, groups=M·g)``, a batch norm of
``D`` channels one of ``M·D`` (per channel, so each model's statistics come from its own samples only), a linear
layer ``F → K`` a :class:`GroupedLinear` (``M`` independent ``K × F`` maps), and channel-wise layers (activations,
pooling, flattening from dimension 1) stay as they are. Row ``b`` of a grouped batch ``(B, M·C, H, W)`` holds sample
``b`` of every model's own batch, so model ``m``'s outputs depend on model ``m``'s parameters and samples alone, and
the sum of the M losses has, for each model, exactly that model's gradient. Adam, SGD and the cosine schedule act
element-wise, so training the grouped model is training the M models one by one, up to the floating-point order of
the grouped kernels (``tests/test_batched.py`` states the tolerance). One wide kernel call replaces M narrow ones:
on a 2-core CPU, where one small ConvNet already keeps the cores busy, that is about as fast as one by one
(0.98×, profiled in docs/BENCHMARKS.md, batched training); the gain is on wide devices and in fewer Python steps.

Only layers whose meaning in the grouped layout is known are batched (:data:`CHANNELWISE`, convolutions, batch norm,
linear layers, and the containers :class:`~privbench.models.nets.SplitModel`, ``nn.Sequential`` and
:class:`~privbench.models.nets.BasicBlock`, whose residual sum is element-wise); anything else (dropout, whose
draws would differ, or a custom forward that mixes channels) raises :class:`NotBatchable`, and the caller trains one
by one (:func:`train_classifiers` does so itself). Clips ``(B, T, C, H, W)`` are grouped along ``T`` and their
:class:`~privbench.models.nets.Motion` becomes :class:`GroupedMotion`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privbench.core.errors import InputError
from privbench.core.images import ImageSet
from privbench.models.nets import BasicBlock, Motion, SplitModel
from privbench.models.train import EarlyStopping, Tracker, accuracy, memory_format, predict, train_classifier

#: Layers that act on each channel separately (or flatten from dimension 1, which keeps each model's block
#: contiguous): kept as they are in the grouped model.
CHANNELWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d,
               nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Flatten)
#: Containers whose forward only chains its children (or adds them element-wise).
CONTAINERS = (SplitModel, nn.Sequential, nn.ModuleDict, BasicBlock)

#: Bytes one grouped training may hold for its models' training sets and activations: a larger family trains in
#: several consecutive groups (the same results, since each model's batches come from its own stream). 16 LiRA
#: shadows of 1,000 video clips each held 7 GB at once before this bound (docs/BENCHMARKS.md, video memory).
GROUP_BYTES = 1 << 30
#: Activation bytes of a training step per input byte (measured: clipnet width 16 holds ≈ 6× its batch).
ACTIVATION_FACTOR = 8


class NotBatchable(InputError):
    """The models cannot be trained as one grouped model (an unknown layer, or models that differ in shape)."""


class GroupedLinear(nn.Module):
    """``M`` independent linear maps ``F → K``: ``(B, M·F) → (B, M·K)``, block ``m`` of the input to block ``m`` of
    the output. ``weight (M, K, F)``, ``bias (M, K)`` or ``None``."""

    def __init__(self, weight: Tensor, bias: Optional[Tensor]) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: Tensor) -> Tensor:
        m, k, f = self.weight.shape
        y = torch.einsum("bmf,mkf->bmk", x.reshape(len(x), m, f), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(len(x), m * k)


class GroupedMotion(nn.Module):
    """:class:`~privbench.models.nets.Motion` of ``M`` models' clips side by side: ``(B, M·T, C, H, W)`` →
    ``(B, M·T·C, H, W)``, each model's clip minus its own mean frame (model ``m``'s frames stay block ``m``)."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise InputError(f"clipnet expects clips (N, T, C, H, W), got {tuple(x.shape)}")
        b, mt = x.shape[:2]
        y = x.reshape(b, self.m, mt // self.m, *x.shape[2:])
        return (y - y.mean(2, keepdim=True)).flatten(1, 3)


def per_model(t: Tensor, m: int, batch: bool = False) -> Tensor:
    """A grouped parameter (or its per-sample gradients ``(B, ...)`` with ``batch``) as ``(M, -1)`` (``(B, M, -1)``):
    every grouped parameter holds the ``M`` models' blocks contiguously along its first (non-batch) dimension."""
    return t.reshape(len(t), m, -1) if batch else t.reshape(m, -1)


def _cat(tensors: Sequence[Optional[Tensor]]) -> Optional[Tensor]:
    return None if tensors[0] is None else torch.cat([t.detach() for t in tensors])


def _stack(mods: Sequence[nn.Module], where: str) -> nn.Module:
    first, m = mods[0], len(mods)
    if any(type(x) is not type(first) for x in mods):
        raise NotBatchable(f"{where}: the models differ ({sorted({type(x).__name__ for x in mods})})")
    if type(first) is nn.Conv2d:
        c = first
        g = nn.Conv2d(m * c.in_channels, m * c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                      groups=m * c.groups, bias=c.bias is not None, padding_mode=c.padding_mode)
        g.weight = nn.Parameter(_cat([x.weight for x in mods]))
        if c.bias is not None:
            g.bias = nn.Parameter(_cat([x.bias for x in mods]))
        return g
    if type(first) is nn.BatchNorm2d:
        b = first
        g = nn.BatchNorm2d(m * b.num_features, b.eps, b.momentum, b.affine, b.track_running_stats)
        if b.affine:
            g.weight, g.bias = nn.Parameter(_cat([x.weight for x in mods])), nn.Parameter(_cat([x.bias for x in mods]))
        if b.track_running_stats:
            if len({int(x.num_batches_tracked) for x in mods}) != 1:
                raise NotBatchable(f"{where}: batch norms with different step counts")
            g.running_mean, g.running_var = _cat([x.running_mean for x in mods]), _cat([x.running_var for x in mods])
            g.num_batches_tracked = b.num_batches_tracked.detach().clone()
        return g
    if type(first) is nn.Linear:
        return GroupedLinear(torch.stack([x.weight.detach() for x in mods]),
                             None if first.bias is None else torch.stack([x.bias.detach() for x in mods]))
    if type(first) is Motion:
        return GroupedMotion(m)
    if type(first) in CHANNELWISE:  # exact types: a subclass may redefine forward
        if isinstance(first, nn.Flatten) and (first.start_dim, first.end_dim) != (1, -1):
            raise NotBatchable(f"{where}: Flatten({first.start_dim}, {first.end_dim}) mixes the models' blocks")
        return copy.deepcopy(first)
    if type(first) in CONTAINERS:
        names = list(first._modules)
        if any(list(x._modules) != names for x in mods):
            raise NotBatchable(f"{where}: the models' layers differ")
        grouped = copy.copy(first)
        grouped._modules = {n: None if first._modules[n] is None else
                            _stack([x._modules[n] for x in mods], f"{where}.{n}") for n in names}
        if any(True for _ in first.named_parameters(recurse=False)) or any(True for _ in first.named_buffers(
                recurse=False)):
            raise NotBatchable(f"{where}: {type(first).__name__} holds parameters of its own")
        return grouped
    raise NotBatchable(f"{where}: {type(first).__name__} cannot be batched (its grouped meaning is unknown)")


def stack_models(models: Sequence[nn.Module]) -> nn.Module:
    """The grouped model of ``models`` (same architecture and shapes): input ``(B, M·C, ...)``, output
    ``(B, M·K)``. Raises :class:`NotBatchable`."""
    if not models:
        raise NotBatchable("no models to stack")
    shapes = [[(n, tuple(p.shape)) for n, p in x.state_dict().items()] for x in models]
    if any(s != shapes[0] for s in shapes):
        raise NotBatchable("the models differ in their parameters' names or shapes")
    return _stack(list(models), "model")


def _unstack(grouped: nn.Module, mods: Sequence[nn.Module]) -> None:
    if isinstance(grouped, nn.Conv2d):
        for i, x in enumerate(mods):
            d = x.out_channels
            x.weight.data.copy_(grouped.weight.data[i * d:(i + 1) * d])
            if x.bias is not None:
                x.bias.data.copy_(grouped.bias.data[i * d:(i + 1) * d])
    elif isinstance(grouped, nn.BatchNorm2d):
        for i, x in enumerate(mods):
            d = x.num_features
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(x, name)
                if t is not None:
                    t.data.copy_(getattr(grouped, name).data[i * d:(i + 1) * d])
            if x.num_batches_tracked is not None:
                x.num_batches_tracked.copy_(grouped.num_batches_tracked)
    elif isinstance(grouped, GroupedLinear):
        for i, x in enumerate(mods):
            x.weight.data.copy_(grouped.weight.data[i])
            if x.bias is not None:
                x.bias.data.copy_(grouped.bias.data[i])
    else:
        for n, child in grouped._modules.items():
            if child is not None:
                _unstack(child, [x._modules[n] for x in mods])


def unstack_into(grouped: nn.Module, models: Sequence[nn.Module]) -> None:
    """Copy the grouped model's parameters and batch-norm statistics back into ``models`` (in place)."""
    _unstack(grouped, list(models))


def group_slices(m: int, n: int, sample_shape: Sequence[int], batch_size: int,
                 budget: Optional[int] = None) -> list[slice]:
    """Consecutive groups of ``m`` models, each group within ``budget`` bytes (default :data:`GROUP_BYTES`), of
    sizes as equal as possible: a model holds ``n`` float32 training samples of ``sample_shape`` (``n = 0`` when the
    caller holds the data anyway) plus about :data:`ACTIVATION_FACTOR` inputs' worth of activations per batch
    sample. Image families (a few MB each) form one group; 16 sets of 1,000 video clips one group each."""
    budget = GROUP_BYTES if budget is None else budget
    sample = 4
    for d in sample_shape:
        sample *= int(d)
    per_model = sample * (n + ACTIVATION_FACTOR * batch_size)
    size = max(1, min(m, budget // max(1, per_model)))
    count = -(-m // size)
    size = -(-m // count)  # balanced: 5 models at most 3 per group are 3 + 2, not 3 + 1 + 1
    return [slice(i, min(m, i + size)) for i in range(0, m, size)]


def _checked(models: Sequence[nn.Module], datas: Sequence[ImageSet], generators: Sequence[torch.Generator],
             augments: Optional[Sequence[Any]], logs: Optional[Sequence[Any]]) -> tuple[list, list, list, list, list]:
    """:func:`train_classifiers`' per-model arguments as lists of one length (``None`` for absent augments, logs)."""
    models, datas, generators = list(models), list(datas), list(generators)
    if not (len(models) == len(datas) == len(generators)) or (augments is not None and len(augments) != len(models)):
        raise InputError(f"{len(models)} models, {len(datas)} data sets, {len(generators)} generators"
                         + ("" if augments is None else f", {len(augments)} augmentations"))
    return (models, datas, generators, list(augments) if augments is not None else [None] * len(models),
            list(logs) if logs is not None else [None] * len(models))


def train_classifiers(models: Sequence[nn.Module], datas: Sequence[ImageSet], *, epochs: int, batch_size: int,
                      lr: float, generators: Sequence[torch.Generator], device: torch.device,
                      augments: Optional[Sequence[Optional[Callable[[Tensor], Tensor]]]] = None,
                      optimizer: Optional[Callable[..., torch.optim.Optimizer]] = None,
                      early_stopping: Optional[EarlyStopping] = None,
                      logs: Optional[Sequence[dict[str, Any]]] = None, channels_last: bool = True) -> list[nn.Module]:
    """:func:`~privbench.models.train.train_classifier` of model ``m`` on ``datas[m]`` with ``generators[m]`` (and
    ``augments[m]``) for every ``m``, as one grouped model: the same epochs, batches, optimizer and cosine schedule,
    each model's batches drawn from its own generator in the same order; with ``early_stopping`` each model keeps
    its own best validation epoch (the group trains until every model has stopped), and ``logs[m]`` receives what
    ``train_classifier``'s ``log`` would. Models that cannot be batched (:class:`NotBatchable`), or data of
    different sizes, train one by one. Returns the models in eval mode on ``device``, trained in place."""
    models, datas, generators, augments, logs = _checked(models, datas, generators, augments, logs)
    n = len(datas[0])
    same = all(len(d) == n and d.images.shape[1:] == datas[0].images.shape[1:] for d in datas)
    # the caller holds the data already: the bound here is on the grouped step's activations
    groups = group_slices(len(models), 0, datas[0].images.shape[1:], batch_size) if same else []
    if len(groups) > 1:  # within the memory bound, group by group
        return [x for sl in groups for x in train_classifiers(
            models[sl], datas[sl], epochs=epochs, batch_size=batch_size, lr=lr, generators=generators[sl],
            device=device, augments=augments[sl], optimizer=optimizer, early_stopping=early_stopping, logs=logs[sl],
            channels_last=channels_last)]
    try:
        grouped = stack_models(models) if same and len(models) > 1 else None
    except NotBatchable:
        grouped = None
    if grouped is None:
        return [train_classifier(x, d, epochs=epochs, batch_size=batch_size, lr=lr, generator=g, device=device,
                                 augment=a, optimizer=optimizer, early_stopping=early_stopping, log=lg,
                                 channels_last=channels_last)
                for x, d, g, a, lg in zip(models, datas, generators, augments, logs)]
    m = len(models)
    trackers = vals = None
    if early_stopping is not None:
        carved = [early_stopping.carve(d, g) for d, g in zip(datas, generators)]
        datas, vals = [c[0] for c in carved], [c[1] for c in carved]
        trackers = [Tracker(early_stopping) for _ in models]
        n = len(datas[0])
    layout = memory_format(datas[0].images, channels_last)
    grouped.to(device).to(memory_format=layout).train()
    opt = (optimizer or torch.optim.Adam)(grouped.parameters(), lr=lr)
    steps = epochs * sum(1 for i in range(0, n, batch_size) if min(batch_size, n - i) >= 2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    for epoch in range(1, epochs + 1):
        perms = [torch.randperm(n, generator=g) for g in generators]
        for i in range(0, n, batch_size):
            idx = [p[i:i + batch_size] for p in perms]
            if len(idx[0]) < 2:
                continue
            xs = []
            for d, j, a in zip(datas, idx, augments):
                x = d.images[j].to(device)
                xs.append(a(x) if a is not None else x)
            y = torch.stack([d.labels[j] for d, j in zip(datas, idx)], 1).to(device)  # (B, M)
            logits = grouped(torch.cat(xs, 1).contiguous(memory_format=layout))
            logits = logits.reshape(len(y), m, -1).permute(0, 2, 1)  # (B, K, M)
            loss = F.cross_entropy(logits, y) * m  # the sum over models of each model's mean loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if trackers is not None and not _track(grouped, models, vals, trackers, epoch, device):
            break
    return _finish(grouped, models, trackers, logs, datas, device)


def _finish(grouped: nn.Module, models: Sequence[nn.Module], trackers: Optional[list[Tracker]],
            logs: Sequence[Optional[dict[str, Any]]], datas: Sequence[ImageSet], device: torch.device
            ) -> list[nn.Module]:
    """The trained grouped model back into ``models`` (each at its best validation epoch under early stopping),
    with each model's log; the models in eval mode on ``device``."""
    grouped.eval()
    unstack_into(grouped, models)
    for x, tr, lg, d in zip(models, trackers or [None] * len(models), logs, datas):
        if tr is not None and tr.state is not None:
            x.load_state_dict(tr.state)
            if lg is not None:
                lg.update(tr.log())
        if lg is not None:
            lg["train_top1"] = accuracy(x.to(device), d, device)
    return [x.to(device).eval() for x in models]


def _track(grouped: nn.Module, models: Sequence[nn.Module], vals: Sequence[ImageSet], trackers: Sequence[Tracker],
           epoch: int, device: torch.device) -> bool:
    """One epoch's validation of every model still running (the grouped model on the models' validation sets side
    by side); the improved ones' weights are copied out. Returns whether any model goes on."""
    m = len(models)
    logits = predict(grouped, torch.cat([v.images for v in vals], 1), device).reshape(len(vals[0]), m, -1)
    grouped.train()
    scratch = None
    for k, tr in enumerate(trackers):
        if tr.stopped:
            continue
        acc = float((logits[:, k].argmax(1) == vals[k].labels).float().mean())
        if acc > tr.best and scratch is None:
            scratch = [copy.deepcopy(x) for x in models]
            unstack_into(grouped, scratch)
        tr.update(epoch, acc, scratch[k] if scratch is not None else models[k])
    return not all(tr.stopped for tr in trackers)
