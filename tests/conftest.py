from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share the cores: one torch thread each, inherited by the processes a test starts (two
    # workers of two threads each on two cores took longer than one process).
    os.environ["OMP_NUM_THREADS"] = "1"

import textwrap
from pathlib import Path

import pytest

from privbench.run.plugins import load_builtins
from tests.test_html_browser import browser  # noqa: F401 - the shared chromium fixture (HTML report tests)

load_builtins()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_registries():
    """Plugins a test registers (``--plugin`` in-process, ``load_plugin_file``) do not leak into other tests."""
    import sys

    from privbench.core.registry import ATTACKS, DATASETS, DEFENSES

    saved = [(r, dict(r._items)) for r in (DEFENSES, ATTACKS, DATASETS)]
    modules = set(sys.modules)
    yield
    for registry, items in saved:
        registry._items.clear()
        registry._items.update(items)
    for name in set(sys.modules) - modules:
        if name.startswith("privbench_plugin_"):
            del sys.modules[name]


def write_suite(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


TINY_SUITE = """
name: tiny
datasets: [digits]
seeds: [0]
splits: {private: 300, aux: 300, test: 200, targets: 40}
task: {model: convnet, width: 8, epochs: 2}
defenses:
  - id: none
  - id: blur
    sweep: {sigma: [1.0, 2.0]}
  - id: noise
attacks:
  - id: inversion-decoder
    params: {epochs: 1, width: 8}
  - id: linkage
    params: {epochs: 1, width: 8}
"""


@pytest.fixture
def tiny_suite(tmp_path: Path) -> Path:
    return write_suite(tmp_path / "tiny.yaml", TINY_SUITE)


def run_attack(attack, release, splits, *, task=None, seed: int = 0, public=None, cache=None, defense=None):
    """Run an attack instance on a defender-side release through the runner's isolated path (a child process with
    the restricted view); returns :class:`privbench.run.evaluate.AttackResult` (output + runner-side ground truth)."""
    import torch

    from privbench.core.contracts import TaskConfig
    from privbench.core.specs import PluginSpec
    from privbench.run.evaluate import EvalOptions, attack_release

    return attack_release(PluginSpec(attack.id, attack.params), release, splits, seed, task or TaskConfig(),
                          EvalOptions(threads=torch.get_num_threads()), cache, public, defense)
