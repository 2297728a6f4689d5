from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from benchmark.registry import load_builtins

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
