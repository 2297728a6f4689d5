"""Batched training of same-shaped models (privbench.models.batched): the grouped model computes what each model
computes, and training it is training the models one by one, up to float rounding of the grouped kernels."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from privbench.core.images import ImageSet
from privbench.models.batched import NotBatchable, stack_models, train_classifiers, unstack_into
from privbench.models.nets import build_model
from privbench.models.train import train_classifier

# Tolerance of batched vs one-by-one training (float32, 9 Adam steps): the grouped kernels sum in another order and
# Adam, dividing by sqrt(v), carries those ~1e-7 relative differences into the weights. Measured on 2026-12-06 (CPU):
# max abs state difference 7.6e-4 (convnet, a batch-norm running variance, within rtol 1e-3), 7.6e-5 (lenet),
# 6.6e-5 (resnet8); logits 2.6e-5, 3.7e-6, 1.6e-5; the weights moved by > 100 x PARAM_ATOL.
PARAM_ATOL, LOGIT_ATOL = 2e-4, 2e-4


def _data(seed: int, n: int = 96, shape: tuple[int, ...] = (1, 16, 16), classes: int = 4) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = (torch.rand((n, *shape), generator=g) * 0.5 + labels.view(-1, 1, 1, 1) / (2 * classes)).clamp(0, 1)
    return ImageSet(images=images, labels=labels)


def _models(arch: str, m: int, channels: int = 1, classes: int = 4) -> list[nn.Module]:
    out = []
    for i in range(m):
        torch.manual_seed(100 + i)  # a test fixture's initialisation; the benchmark passes generators
        out.append(build_model(arch, channels, classes))
    return out


@pytest.mark.parametrize("arch", ["convnet", "lenet", "resnet8"])
def test_the_grouped_model_computes_each_models_output(arch) -> None:
    models = [x.eval() for x in _models(arch, 3)]
    xs = [_data(i).images[:8] for i in range(3)]
    grouped = stack_models(models).eval()
    with torch.no_grad():
        out = grouped(torch.cat(xs, 1)).reshape(8, 3, -1)
        for i, (model, x) in enumerate(zip(models, xs)):
            torch.testing.assert_close(out[:, i], model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["convnet", "lenet", "resnet8"])
def test_batched_training_equals_training_one_by_one(arch) -> None:
    """The task model's families: ConvNet with batch norm, LeNet without, ResNet-8 (residual blocks); three models
    on three data sets, each with its own generator, Adam and the cosine schedule."""
    m = 3
    datas = [_data(10 + i) for i in range(m)]
    one = _models(arch, m)
    many = copy.deepcopy(one)
    dev = torch.device("cpu")
    for x, d, i in zip(one, datas, range(m)):  # the default layout: see the channels-last test below
        train_classifier(x, d, epochs=3, batch_size=32, lr=1e-2, generator=torch.Generator().manual_seed(i),
                         device=dev, channels_last=False)
    train_classifiers(many, datas, epochs=3, batch_size=32, lr=1e-2, channels_last=False,
                      generators=[torch.Generator().manual_seed(i) for i in range(m)], device=dev)
    moved = 0.0
    for a, b, init in zip(one, many, _models(arch, m)):
        for (name, p), q, p0 in zip(a.state_dict().items(), b.state_dict().values(), init.state_dict().values()):
            if p.is_floating_point():
                torch.testing.assert_close(q, p, atol=PARAM_ATOL, rtol=1e-3, msg=name)
                moved = max(moved, float((p - p0).abs().max()))
            else:
                assert torch.equal(p, q), name  # num_batches_tracked
        x = datas[0].images[:16]
        with torch.no_grad():
            torch.testing.assert_close(b(x), a(x), atol=LOGIT_ATOL, rtol=1e-3)
    assert moved > 100 * PARAM_ATOL  # training moved the weights far more than the tolerance


@pytest.mark.parametrize("arch", ["convnet", "resnet8"])
def test_channels_last_grouped_gradients_equal_one_by_one(arch) -> None:
    """Training runs channels-last (1.4-1.5×). A grouped step's gradients equal each model's own to float32
    round-off there too (3.5e-6 relative measured); over many Adam steps the two runs then drift apart as any
    round-off does (ε = 1e-8 amplifies gradient components near 1e-8), so the multi-step equality above is
    checked in the default layout, where the grouped and single kernels happen to round alike."""
    from torch.nn import functional as F

    from privbench.models.batched import per_model

    m = 3
    datas = [_data(10 + i) for i in range(m)]
    one = [x.to(memory_format=torch.channels_last).train() for x in _models(arch, m)]
    grouped = stack_models(copy.deepcopy(one)).to(memory_format=torch.channels_last).train()
    xs, ys = [d.images[:32] for d in datas], [d.labels[:32] for d in datas]
    for x, model, y in zip(xs, one, ys):
        F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y).backward()
    out = grouped(torch.cat(xs, 1).contiguous(memory_format=torch.channels_last))
    (F.cross_entropy(out.reshape(32, m, -1).permute(0, 2, 1), torch.stack(ys, 1)) * m).backward()
    for name, p in grouped.named_parameters():
        for k, block in enumerate(per_model(p.grad, m)):
            q = dict(one[k].named_parameters())[name].grad
            torch.testing.assert_close(block.reshape(q.shape), q, atol=1e-5 * float(q.abs().max()), rtol=0,
                                       msg=name)


def test_sgd_with_momentum_and_lenet_batch_norm_also_match() -> None:
    m = 2
    datas = [_data(20 + i) for i in range(m)]
    one = [build_model("lenet", 1, 4, bn=True) for _ in range(m)]
    many = copy.deepcopy(one)
    sgd = lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9)  # noqa: E731
    for x, d, i in zip(one, datas, range(m)):
        train_classifier(x, d, epochs=2, batch_size=24, lr=0.05, generator=torch.Generator().manual_seed(i),
                         device=torch.device("cpu"), optimizer=sgd)
    train_classifiers(many, datas, epochs=2, batch_size=24, lr=0.05, optimizer=sgd, device=torch.device("cpu"),
                      generators=[torch.Generator().manual_seed(i) for i in range(m)])
    for a, b in zip(one, many):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(q, p, atol=PARAM_ATOL, rtol=1e-3, msg=name)


def test_what_cannot_be_batched_is_refused_and_trains_one_by_one() -> None:
    drop = [nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(256, 4)) for _ in range(2)]
    with pytest.raises(NotBatchable, match="Dropout"):
        stack_models(drop)
    with pytest.raises(NotBatchable, match="Conv1d"):
        stack_models([nn.Sequential(nn.Conv1d(2, 2, 3)) for _ in range(2)])
    with pytest.raises(NotBatchable, match="differ"):
        stack_models([build_model("convnet", 1, 4), build_model("convnet", 1, 4, width=8)])
    datas = [_data(30 + i) for i in range(2)]
    torch.manual_seed(7)  # dropout draws from the global stream in both runs (a test fixture)
    first = copy.deepcopy(drop[0])
    train_classifier(first, datas[0], epochs=1, batch_size=32, lr=1e-2, generator=torch.Generator().manual_seed(0),
                     device=torch.device("cpu"))
    torch.manual_seed(7)
    train_classifiers(drop, datas, epochs=1, batch_size=32, lr=1e-2, device=torch.device("cpu"),
                      generators=[torch.Generator().manual_seed(i) for i in range(2)])
    for p, q in zip(first.state_dict().values(), drop[0].state_dict().values()):
        assert torch.equal(p, q)  # the fallback is the one-by-one loop itself


def test_unstack_round_trips() -> None:
    models = _models("convnet", 3)
    grouped = stack_models(models)
    copies = _models("convnet", 3)
    for c in copies:
        for p in c.parameters():
            p.data.zero_()
    unstack_into(grouped, copies)
    for a, b in zip(models, copies):
        for p, q in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(p, q)


def _clips(seed: int, n: int = 48, classes: int = 3) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    clips = (torch.rand((n, 4, 1, 12, 12), generator=g) * 0.5
             + torch.arange(4).view(1, 4, 1, 1, 1) * labels.view(-1, 1, 1, 1, 1) / 16).clamp(0, 1)
    return ImageSet(images=clips, labels=labels)


def test_clip_models_batch_along_time_and_match_one_by_one() -> None:
    """clipnet (Motion: each clip minus its mean frame, frames as channels) on clips (B, T, C, H, W)."""
    m = 3
    datas = [_clips(40 + i) for i in range(m)]
    one = [build_model("clipnet", 4, 3, width=8) for _ in range(m)]
    many = copy.deepcopy(one)
    grouped = stack_models([copy.deepcopy(x).eval() for x in one]).eval()
    with torch.no_grad():
        out = grouped(torch.cat([d.images[:6] for d in datas], 1)).reshape(6, m, -1)
        for i, (x, d) in enumerate(zip(one, datas)):
            torch.testing.assert_close(out[:, i], copy.deepcopy(x).eval()(d.images[:6]), atol=1e-5, rtol=1e-5)
    for x, d, i in zip(one, datas, range(m)):
        train_classifier(x, d, epochs=2, batch_size=16, lr=1e-2, generator=torch.Generator().manual_seed(i),
                         device=torch.device("cpu"))
    train_classifiers(many, datas, epochs=2, batch_size=16, lr=1e-2, device=torch.device("cpu"),
                      generators=[torch.Generator().manual_seed(i) for i in range(m)])
    for a, b in zip(one, many):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(q, p, atol=PARAM_ATOL, rtol=1e-3, msg=name)


def test_early_stopping_keeps_the_best_validation_epoch_batched_as_one_by_one() -> None:
    """Patience 2 on a 25% validation split: each model stops on its own, with its best epoch's weights, and the
    grouped run (which trains until every model has stopped) returns the same models and logs."""
    from privbench.models.train import EarlyStopping, accuracy

    m, rule = 3, EarlyStopping(patience=2, fraction=0.25)
    datas = [_data(50 + i, n=64) for i in range(m)]
    one = _models("lenet", m)
    many = copy.deepcopy(one)
    logs_one, logs_many = [{} for _ in range(m)], [{} for _ in range(m)]
    for x, d, i, lg in zip(one, datas, range(m), logs_one):
        train_classifier(x, d, epochs=12, batch_size=16, lr=3e-2, generator=torch.Generator().manual_seed(i),
                         device=torch.device("cpu"), early_stopping=rule, log=lg, channels_last=False)
    train_classifiers(many, datas, epochs=12, batch_size=16, lr=3e-2, device=torch.device("cpu"),
                      generators=[torch.Generator().manual_seed(i) for i in range(m)], early_stopping=rule,
                      logs=logs_many, channels_last=False)  # the default layout: test_channels_last_grouped_...
    for a, b in zip(one, many):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(q, p, atol=PARAM_ATOL, rtol=1e-3, msg=name)
    for la, lb, x, d, i in zip(logs_one, logs_many, one, datas, range(m)):
        assert la.keys() == {"epochs_run", "best_epoch", "val_top1", "train_top1"}
        assert la["epochs_run"] == lb["epochs_run"] and la["best_epoch"] == lb["best_epoch"]
        assert abs(la["val_top1"] - lb["val_top1"]) < 1e-9 and la["epochs_run"] - la["best_epoch"] <= 2
        _, val = rule.carve(d, torch.Generator().manual_seed(i))  # the same split, the best epoch's weights
        assert accuracy(x, val, torch.device("cpu")) == la["val_top1"]
    assert any(lg["epochs_run"] < 12 for lg in logs_one)  # it stopped before the budget


def test_a_family_over_the_memory_bound_trains_in_groups_with_the_same_results(monkeypatch) -> None:
    """16 video shadows once held 7 GB at once: :func:`group_slices` bounds a group's data and activations; a
    family split into groups (here 5 models in groups of 3 and 2) trains exactly as one group would."""
    from privbench.models import batched

    shape, n, batch = (1, 16, 16), 96, 32
    per_model = 4 * 256 * (n + batched.ACTIVATION_FACTOR * batch)
    assert batched.group_slices(5, n, shape, batch, budget=2 * per_model) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert batched.group_slices(5, n, shape, batch, budget=3 * per_model) == [slice(0, 3), slice(3, 5)]  # balanced
    assert batched.group_slices(5, n, shape, batch, budget=1) == [slice(i, i + 1) for i in range(5)]
    assert batched.group_slices(16, 1000, (16, 3, 48, 48), 32) == [slice(i, i + 1) for i in range(16)]  # clips
    assert len(batched.group_slices(16, 0, (16, 3, 48, 48), 32)) == 2  # their activations alone: 8 + 8
    assert batched.group_slices(16, 1000, (1, 28, 28), 32) == [slice(0, 16)]  # mnist: one group

    datas = [_data(30 + i) for i in range(5)]
    together, grouped = _models("convnet", 5), _models("convnet", 5)
    calls = []
    real = batched.stack_models
    monkeypatch.setattr(batched, "stack_models", lambda ms: calls.append(len(ms)) or real(ms))
    kw = dict(epochs=2, batch_size=batch, lr=1e-2, device=torch.device("cpu"))
    train_classifiers(together, datas, generators=[torch.Generator().manual_seed(i) for i in range(5)], **kw)
    activations = 4 * 256 * batched.ACTIVATION_FACTOR * batch  # train_classifiers bounds activations only
    monkeypatch.setattr(batched, "GROUP_BYTES", 3 * activations)
    train_classifiers(grouped, datas, generators=[torch.Generator().manual_seed(i) for i in range(5)], **kw)
    assert calls == [5, 3, 2]  # one group of 5, then groups of 3 and 2
    for a, b in zip(together, grouped):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(q, p, atol=PARAM_ATOL, rtol=1e-3, msg=name)
