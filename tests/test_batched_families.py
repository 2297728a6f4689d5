"""The model families the benchmark trains several of, trained together and one by one: the seeds' task models of
``none`` and of DP-SGD (per-sample clipping and noise in the grouped form), and LiRA's shadow models. Each pair must
agree within the float tolerance of tests/test_batched.py (the grouped kernels sum in another order)."""

from __future__ import annotations

import pytest
import torch

from privbench.attacks.membership import Membership, logit_confidence
from privbench.core.contracts import AttackContext, AttackView, ReleaseView, RunContext, TaskConfig
from privbench.core.images import DatasetInfo, ImageSet, Splits
from privbench.core.registry import DEFENSES
from privbench.core.seeding import seeded
from privbench.models import build_model, input_channels, map_batched, train_classifier
from privbench.models.batched import train_classifiers
from tests.test_batched import LOGIT_ATOL, PARAM_ATOL

CPU = torch.device("cpu")


def _set(seed: int, n: int, classes: int = 4) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = (torch.rand((n, 1, 16, 16), generator=g) * 0.5 + labels.view(-1, 1, 1, 1) / (2 * classes)).clamp(0, 1)
    return ImageSet(images=images, labels=labels)


def _splits(seed: int, n: int = 80) -> Splits:
    info = DatasetInfo("toy", 4, (1, 16, 16), {"private": n, "aux": 40, "test": 40, "targets": 8}, f"h{seed}", {})
    return Splits(_set(seed, n), _set(seed + 100, 40), _set(seed + 200, 40), torch.arange(8), info)


def _assert_same_models(one, many) -> None:
    for a, b in zip(one, many):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            if p.is_floating_point():
                torch.testing.assert_close(q, p, atol=PARAM_ATOL, rtol=1e-3, msg=name)
            else:
                assert torch.equal(p, q), name
        x = _set(999, 16).images
        with torch.no_grad():
            torch.testing.assert_close(b(x), a(x), atol=LOGIT_ATOL, rtol=1e-3)


TASK = TaskConfig(model="lenet", width=4, epochs=2, batch_size=16, lr=1e-2)


def _no_fallback(monkeypatch) -> None:
    """Fail if batched training falls back to the one-by-one loop (so the grouped path is what is tested)."""
    import privbench.models.batched as batched

    def refuse(*a, **k):
        raise AssertionError("fell back to one-by-one training")

    monkeypatch.setattr(batched, "train_classifier", refuse)


def test_none_builds_its_seeds_together_as_one_by_one(monkeypatch) -> None:
    defense = DEFENSES.get("none")(None)
    splits = [_splits(s) for s in range(3)]
    ctxs = [RunContext(seed=s, device=CPU, task=TASK) for s in range(3)]
    one = [defense.build(sp, c).model for sp, c in zip(splits, ctxs)]
    _no_fallback(monkeypatch)
    many = [r.model for r in defense.build_many(splits, ctxs)]
    _assert_same_models(one, many)
    fresh = [defense.task_model(1, 4, TASK) for _ in range(3)]
    assert max(float((p - q).detach().abs().max()) for a, b in zip(one, fresh)
               for p, q in zip(a.parameters(), b.parameters())) > 100 * PARAM_ATOL  # trained, not initial


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_dp_sgd_builds_its_seeds_together_as_one_by_one(sigma, monkeypatch) -> None:
    """Per-sample clipping over each model's own parameters, Poisson batches of different sizes (padded with
    zero-weight samples), each seed's noise from its own stream: the grouped run equals three separate runs."""
    defense = DEFENSES.get("dp-sgd")(DEFENSES.get("dp-sgd").Params(noise_multiplier=sigma, max_grad_norm=0.5,
                                                                    lr=0.2, epochs=2))
    splits = [_splits(s) for s in range(3)]
    ctxs = [RunContext(seed=s, device=CPU, task=TASK) for s in range(3)]
    one = [defense.build(sp, c) for sp, c in zip(splits, ctxs)]
    import privbench.defenses.dp_sgd as dp_sgd

    calls, real = [], dp_sgd.grouped_step
    monkeypatch.setattr(dp_sgd, "grouped_step", lambda *a: calls.append(1) or real(*a))
    many = defense.build_many(splits, ctxs)
    assert len(calls) == one[0].meta.extra["dp_steps"]  # the grouped path ran every step
    _assert_same_models([r.model for r in one], [r.model for r in many])
    for a, b in zip(one, many):
        for key in ("noise_multiplier", "dp_steps", "sample_rate"):
            assert a.meta.extra[key] == b.meta.extra[key]
        assert a.meta.epsilon == b.meta.epsilon
    # the clipping binds: the same runs at a clip norm 100x larger end elsewhere
    loose = DEFENSES.get("dp-sgd")(DEFENSES.get("dp-sgd").Params(noise_multiplier=sigma, max_grad_norm=50.0,
                                                                  lr=0.2, epochs=2))
    other = loose.build(splits[0], ctxs[0]).model
    assert max(float((p - q).detach().abs().max()) for p, q in zip(other.parameters(), one[0].model.parameters())) > 1e-2


def test_dp_sgd_with_different_schedules_falls_back_to_one_by_one() -> None:
    defense = DEFENSES.get("dp-sgd")(DEFENSES.get("dp-sgd").Params(noise_multiplier=1.0, epochs=1))
    splits = [_splits(0, n=80), _splits(1, n=64)]  # different sizes: different sampling rates and step counts
    ctxs = [RunContext(seed=s, device=CPU, task=TASK) for s in range(2)]
    one = [defense.build(sp, c).model for sp, c in zip(splits, ctxs)]
    many = [r.model for r in defense.build_many(splits, ctxs)]
    for a, b in zip(one, many):
        for p, q in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(p, q)  # the fallback is build itself


def test_lira_shadows_trained_together_equal_shadows_trained_one_by_one(monkeypatch) -> None:
    """Membership's K shadow models (same architecture, same data size) train as one grouped model; their
    confidences on the candidates equal those of the K shadows trained one by one with the same streams."""
    task = TaskConfig(model="convnet", width=8, epochs=2, batch_size=16, lr=3e-3)
    cand, aux = _set(1, 48), _set(2, 60)
    view = AttackView(release=ReleaseView(), aux=aux, targets=torch.arange(4), image_shape=(1, 16, 16),
                      num_classes=4, candidates=cand, train_size=40)
    ctx = AttackContext(device=CPU, task=task, stream=7)
    attack = Membership(Membership.Params(shadows=3))
    with monkeypatch.context() as patch:
        _no_fallback(patch)
        got = attack._shadow_confidences(view, ctx)

    g = ctx.generator(salt=313)  # the same draws, one model at a time
    phi = []
    for i in range(3):
        pick_c = torch.randperm(48, generator=g)[:24]
        pick_a = torch.randperm(60, generator=g)[:16]
        assert got["inside"][i, pick_c].all() and int(got["inside"][i].sum()) == 24
        train = ImageSet(torch.cat([cand.images[pick_c], aux.images[pick_a]]),
                         torch.cat([cand.labels[pick_c], aux.labels[pick_a]]))
        with seeded(ctx.generator(f"shadow-init-{i}")):
            model = build_model("convnet", input_channels(train.shape), 4, width=8)
        train_classifier(model, train, epochs=2, batch_size=16, lr=3e-3, generator=ctx.generator(salt=400 + i),
                         device=CPU)
        phi.append(logit_confidence(map_batched(model.eval(), cand.images, CPU), cand.labels))
    torch.testing.assert_close(got["phi"], torch.stack(phi), atol=1e-3, rtol=1e-3)
    assert float(torch.stack(phi).std(0).mean()) > 1e-2  # the shadows differ from one another


def test_train_classifiers_rejects_mismatched_lists() -> None:
    from privbench.core.errors import InputError

    with pytest.raises(InputError, match="2 models, 1 data sets"):
        train_classifiers([build_model("lenet", 1, 4)] * 2, [_set(0, 8)], epochs=1, batch_size=4, lr=1e-3,
                          generators=[torch.Generator()] * 2, device=CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_training_on_cuda_equals_the_cpu_run_within_float_tolerance() -> None:
    """--device cuda: the grouped model, its batches and its DP noise (drawn on the CPU, moved) live on the device;
    the models come back equal to the CPU run within float tolerance."""
    cuda = torch.device("cuda")
    dp = DEFENSES.get("dp-sgd")(DEFENSES.get("dp-sgd").Params(noise_multiplier=1.0, max_grad_norm=0.5, lr=0.2,
                                                               epochs=1))
    splits = [_splits(s) for s in range(2)]
    for defense in (DEFENSES.get("none")(None), dp):
        cpu = defense.build_many(splits, [RunContext(seed=s, device=CPU, task=TASK) for s in range(2)])
        gpu = defense.build_many(splits, [RunContext(seed=s, device=cuda, task=TASK) for s in range(2)])
        for a, b in zip(cpu, gpu):
            for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
                torch.testing.assert_close(q.cpu(), p, atol=1e-3, rtol=1e-3, msg=name)
