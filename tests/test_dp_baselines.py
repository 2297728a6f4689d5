"""DP baselines at published strength (issue 29): the models of Tramèr & Boneh, the fixed-feature training path,
the closed-form clipped sum of a linear head, the fixed aux split and the aux-only tuning of the dp suite."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from privbench.core.contracts import TaskConfig
from privbench.core.registry import DEFENSES
from privbench.core.release import StepData
from privbench.core.specs import SplitConfig
from privbench.data.core import load_splits
from privbench.defenses.dp_sgd import clipped_sum, clipped_total, fixed_features
from privbench.models import build_model
from privbench.ops.persample import per_sample_gradients
from privbench.run import tune
from privbench.run.config import SUITES_DIR, load_suite


def _loop_clipped_sum(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, c: float) -> list[torch.Tensor]:
    """Per-sample gradients one sample at a time with autograd through the whole model (the reference)."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for xi, yi in zip(x, y):
        g = torch.autograd.grad(F.cross_entropy(model(xi[None]), yi[None]), params)
        norm = torch.sqrt(sum(t.pow(2).sum() for t in g))
        f = min(1.0, c / (float(norm) + 1e-6))
        total = [a + f * b for a, b in zip(total, g)]
    return total


def test_scatternet_fixed_features_and_closed_form_match_autograd() -> None:
    torch.manual_seed(0)
    model = build_model("scatternet", 1, 10)
    x, y = torch.rand(24, 1, 28, 28), torch.randint(0, 10, (24,))
    trained, data = fixed_features(model, StepData(x, y), torch.device("cpu"))
    assert data.images.shape == (24, 81, 7, 7) and list(trained.parameters()) == list(model.parameters())
    fast = list(clipped_total(trained, data.images, data.labels, 0.1).values())
    slow = list(clipped_sum(per_sample_gradients(trained, data.images, data.labels), 0.1).values())
    ref = _loop_clipped_sum(model, x, y, 0.1)
    for a, b, r in zip(fast, slow, ref):
        assert torch.allclose(a, r, atol=1e-6) and torch.allclose(b, r, atol=1e-6)


def test_tanh_cnn_is_the_papers_architecture() -> None:
    model = build_model("tanh-cnn", 1, 10)
    assert sum(p.numel() for p in model.parameters()) == 26_010
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.modules()) == 3
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    per = per_sample_gradients(model, x, y)
    ref = _loop_clipped_sum(model, x, y, 1e9)  # unclipped: the sum of per-sample gradients
    for a, r in zip(per.values(), ref):
        assert torch.allclose(a.sum(0), r, atol=1e-5)


def test_fixed_aux_is_the_same_for_every_seed_and_disjoint_from_private() -> None:
    cfg = SplitConfig(private=800, aux=500, test=500, targets=10, fixed_aux=True)
    a, b = load_splits("mnist5k", cfg, 0), load_splits("mnist5k", cfg, 1)
    assert a.info.split_hashes["aux"] == b.info.split_hashes["aux"]
    assert a.info.split_hashes["private"] != b.info.split_hashes["private"]
    key = lambda s: {hash(t.numpy().tobytes()) for t in s.images}  # noqa: E731
    aux = key(a.aux)
    for s in (a, b):
        assert not aux & key(s.private) and not aux & key(s.test) and not key(s.private) & key(s.test)
    plain = dataclasses.replace(cfg, fixed_aux=False)
    assert (load_splits("mnist5k", plain, 0).info.split_hashes["aux"]
            != load_splits("mnist5k", plain, 1).info.split_hashes["aux"])


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_full_fashion_mnist_splits_of_the_dp_suite() -> None:
    suite = load_suite("dp")
    s = load_splits("fashion-mnist", suite.splits, 0)
    assert (len(s.private), len(s.aux), len(s.test)) == (55_000, 5_000, 10_000)
    assert s.info.shape == (1, 28, 28) and s.info.num_classes == 10


def test_proxy_keeps_the_noise_on_the_mean_gradient() -> None:
    splits = load_splits("mnist5k", SplitConfig(private=1000, aux=200, test=100, targets=5, fixed_aux=True), 0)
    train, val = tune.proxy_split(splits.aux)
    assert (len(train), len(val)) == (160, 40)
    params = DEFENSES.get("dp-sgd").Params(target_epsilon=3.0, max_grad_norm=0.1, batch_size=100, lr=0.5, epochs=2,
                                           model="tanh-cnn")
    row = tune.proxy_accuracy(params, 1000, train, val, splits.info, TaskConfig(epochs=2), torch.device("cpu"))
    noise_private = row["sigma_private"] * 0.1 / (row["sample_rate"] * 1000)
    noise_proxy = row["sigma_proxy"] * 0.1 / (row["sample_rate"] * len(train))
    assert noise_proxy == pytest.approx(noise_private) and row["sigma_private"] > 0
    assert 0.0 <= row["val_top1"] <= 1.0
    grid = tune.candidates(params)
    assert grid[0] == params and len(grid) == 6 and {c.lr for c in grid} == {0.25, 0.5, 1.0}


@pytest.mark.parametrize("name,count", [("dp", 12), ("quick", 1)])
def test_suites_carry_their_tuning_winners(name: str, count: int) -> None:
    """Every tuned dp-sgd entry (a target ε) of the suite uses the learning rate and epochs its aux-only search
    chose (``python -m privbench.run.tune <suite>``), and the search's winner is its best candidate."""
    suite = load_suite(name)
    searches = json.loads((SUITES_DIR / f"{name}.tuning.json").read_text())["searches"]
    tuned = [s for s in suite.defenses if s.id == "dp-sgd" and s.params.target_epsilon is not None]
    assert len(searches) == len(tuned) == count
    for spec in tuned:
        (dataset,) = spec.datasets
        match = [s for s in searches if s["dataset"] == dataset and s["config"]["model"] == spec.params.model
                 and s["config"]["target_epsilon"] == spec.params.target_epsilon]
        assert len(match) == 1, spec.label
        assert (spec.params.lr, spec.params.epochs) == (match[0]["best"]["lr"], match[0]["best"]["epochs"])
        assert max(c["val_top1"] for c in match[0]["candidates"]) == next(
            c["val_top1"] for c in match[0]["candidates"]
            if (c["lr"], c["epochs"]) == (spec.params.lr, spec.params.epochs))


def test_a_winner_on_the_grid_edge_extends_the_search() -> None:
    params = DEFENSES.get("dp-sgd").Params(target_epsilon=3.0, lr=1.0, epochs=40, model="tanh-cnn")
    grid = tune.candidates(params)

    def rows(best_lr: float, best_epochs: int) -> list[dict]:
        return [{"lr": c.lr, "epochs": c.epochs, "val_top1": 0.9 if (c.lr, c.epochs) == (best_lr, best_epochs)
                 else 0.5} for c in grid]

    assert tune._outwards(rows(1.0, 40), params, grid) == []  # an interior winner: the search is done
    low = tune._outwards(rows(0.5, 40), params, grid)
    assert {(c.lr, c.epochs) for c in low} == {(0.25, 20), (0.25, 40)}
    short = tune._outwards(rows(2.0, 20), params, grid)
    assert {(c.lr, c.epochs) for c in short} == {(4.0, 20), (4.0, 40), (2.0, 10)}
