"""The driver builds the seeds of each defense configuration together (privbench.run.prebuild): the cells then
find their releases in the cache, and their numbers equal those of a run that builds every seed in its own cell,
within the float tolerance of batched training."""

from __future__ import annotations

import pytest

from privbench.core.records import iter_records
from privbench.run.config import load_suite
from privbench.run.runner import run_suite
from privbench.run.worker import RunOptions
from tests.conftest import write_suite

SUITE = """
name: seeds-together
datasets: [digits]
seeds: [0, 1]
splits: {private: 240, aux: 240, test: 200, targets: 24}
task: {model: convnet, width: 8, epochs: 3, patience: 1}
defenses:
  - id: none
  - id: blur
    params: {sigma: 1.0}
  - id: dp-sgd
    params: {noise_multiplier: 1.0, epochs: 1, lr: 0.2}
attacks:
  - id: linkage
    params: {epochs: 1, width: 8}
  - id: membership
    params: {shadows: 2, epochs: 1}
"""


def _utilities(out) -> dict[str, tuple[float, float, dict]]:
    return {r["cell_id"]: (r["metrics"]["utility"]["top1"], r["metrics"]["cost"]["batched_seeds"],
                           r["metrics"]["utility"]) for _, r in iter_records(out / "records") if r["status"] == "ok"}


@pytest.mark.slow  # seeds are built together by default only on a GPU; the families' equality tests run by default
def test_seeds_built_together_give_the_cells_the_same_numbers(tmp_path) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE))
    together = run_suite(suite, RunOptions(out=tmp_path / "a", progress=False, dp_audit_trials=200,
                                            batch_seeds=True))
    alone = run_suite(suite, RunOptions(out=tmp_path / "b", progress=False, dp_audit_trials=200, batch_seeds=False))
    assert together.prebuilt is not None and alone.prebuilt is None
    assert (together.prebuilt.groups, together.prebuilt.seeds, together.prebuilt.failed) == (3, 6, [])
    assert together.failed == alone.failed == 0 and together.ok == alone.ok
    a, b = _utilities(tmp_path / "a"), _utilities(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 8  # 3 defenses x 2 seeds, linkage skips dp-sgd, membership skips blur
    for cell in a:
        assert a[cell][1] == 2.0 and b[cell][1] == 1.0, cell  # how each release was built is recorded
        assert abs(a[cell][0] - b[cell][0]) <= 0.015, (cell, a[cell][0], b[cell][0])  # <= 3 of 200 test images
        ua, ub = a[cell][2], b[cell][2]
        if "dp-sgd" not in cell:  # the task recipe's early stopping, recorded with the generalisation gap
            assert {"train_top1", "gap", "epochs_run", "best_epoch", "val_top1"} <= ua.keys(), ua
            assert (ua["epochs_run"], ua["best_epoch"]) == (ub["epochs_run"], ub["best_epoch"]) and ua["epochs_run"] <= 3
            assert abs(ua["gap"] - (ua["train_top1"] - ua["top1"])) < 1e-12
    again = run_suite(suite, RunOptions(out=tmp_path / "a", progress=False, dp_audit_trials=200, batch_seeds=True))
    assert again.reused == again.planned and again.prebuilt is None  # nothing pending, nothing rebuilt
