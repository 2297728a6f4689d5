"""Common random numbers: a seed's reference and defended models share their initialisation and data order, so that
their paired utility difference measures the defense (issue 29)."""

from __future__ import annotations

import torch

from privbench.core.contracts import RunContext, TaskConfig
from privbench.core.registry import DEFENSES
from privbench.core.specs import SplitConfig
from privbench.data.core import load_splits
from privbench.run.evaluate import utility_model


def _ctx(seed: int) -> RunContext:
    return RunContext(seed=seed, device=torch.device("cpu"), task=TaskConfig(model="convnet", width=8, epochs=1))


def _splits():
    return load_splits("mnist5k", SplitConfig(private=60, aux=20, test=20, targets=5), 0)


def test_reference_and_data_release_start_from_the_same_weights() -> None:
    splits, ctx = _splits(), _ctx(4)
    none, blur = DEFENSES.get("none")(), DEFENSES.get("blur")()
    reference = none._initial_task_model(splits.private, splits, ctx)
    defended = utility_model(blur, blur.build(splits, ctx), splits, ctx.task, ctx)
    for (name, a), b in zip(reference.state_dict().items(), defended.state_dict().values()):
        assert torch.equal(a, b), name
    other = none._initial_task_model(splits.private, splits, _ctx(5))  # another seed draws other weights
    assert not torch.equal(next(iter(other.state_dict().values())), next(iter(reference.state_dict().values())))


def test_dp_sgd_starts_from_the_reference_weights_without_batchnorm() -> None:
    """BatchNorm's initial weights are constants, so removing it leaves the convolutions' draws unchanged."""
    splits, ctx = _splits(), _ctx(4)
    reference = DEFENSES.get("none")()._initial_task_model(splits.private, splits, ctx)
    with torch.random.fork_rng():
        from privbench.core.seeding import seeded

        dp = DEFENSES.get("dp-sgd")()
        with seeded(ctx.init_generator()):
            private = dp.task_model(1, 10, ctx.task)
    ref_convs = [m.weight for m in reference.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    dp_convs = [m.weight for m in private.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(ref_convs) == len(dp_convs) > 0
    for a, b in zip(ref_convs, dp_convs):
        assert torch.equal(a, b)


def test_order_streams_agree() -> None:
    a, b = _ctx(2).order_generator(), _ctx(2).order_generator()
    assert torch.equal(torch.randperm(50, generator=a), torch.randperm(50, generator=b))
