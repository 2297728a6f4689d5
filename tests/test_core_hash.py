"""The core hash is narrow (issue 27; docs/DESIGN.md, code hashes): a comment in a dataset loader, the suite loader
or the YAML loader moves no cell key, one in the scoring code moves every one.

Each case runs in a child interpreter on a copy of the installed package laid out as ``privbench/`` (so no test
edits the sources others read), importing the copy ahead of the editable install."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from privbench.core.paths import package_dir

_CODE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import privbench
assert privbench.__file__.startswith(sys.argv[1]), privbench.__file__
from privbench.run.plugins import load_builtins
load_builtins()
from privbench.run.plan import code_versions, core_hash
print(json.dumps({"core": core_hash(), "cell": code_versions("blur", "inversion-decoder")}))
"""


def _copy(tmp: Path) -> Path:
    root = tmp / "tree"
    shutil.copytree(package_dir("privbench"), root / "privbench", ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("defenses", "attacks"):
        target = root / "privbench" / sub
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(package_dir(f"privbench.{sub}"), target, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _hashes(root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _CODE, str(root)], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _comment(root: Path, rel: str) -> None:
    path = root / "privbench" / rel
    assert path.is_file(), path
    path.write_text(path.read_text() + "\n# a comment that changes no number\n")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = _copy(tmp_path_factory.mktemp("core-hash"))
    return root, _hashes(root)


#: Modules outside the core: a dataset loader and the split code, the suite loader, the YAML loader, the cache and
#: the record schema. Edited together (one child run): if any moved a key, the union would.
OUTSIDE = ("data/local.py", "data/core.py", "run/config.py", "core/yamlsafe.py", "run/cache.py", "core/records.py")


def test_a_comment_outside_the_core_moves_no_cell_key(tree: tuple[Path, dict]) -> None:
    root, before = tree
    for rel in OUTSIDE:
        _comment(root, rel)
    try:
        assert _hashes(root) == before
    finally:
        for rel in OUTSIDE:
            shutil.copy(package_dir("privbench") / rel, root / "privbench" / rel)


@pytest.mark.parametrize("rel", ["run/scoring.py", "core/calibration.py"])
def test_a_comment_in_the_core_moves_every_cell_key(tree: tuple[Path, dict], rel: str) -> None:
    root, before = tree
    _comment(root, rel)
    try:
        after = _hashes(root)
    finally:
        shutil.copy(package_dir("privbench") / rel, root / "privbench" / rel)
    assert after["core"] != before["core"]
    assert after["cell"]["core"] != before["cell"]["core"]


def test_the_core_hash_is_narrow() -> None:
    """What the core hash covers: evaluation, scoring, metrics, models, calibration, DP ops and the contracts they
    use; no dataset loader, suite or YAML loader, cache, isolation or plugin loader."""
    from privbench.core.codehash import module_closure
    from privbench.run.plan import CORE_MODULES, NOT_CORE

    covered = sorted({m for root in CORE_MODULES for m in module_closure(root, NOT_CORE)})
    assert not [m for m in covered if m.startswith("privbench.data")]
    assert not set(covered) & {"privbench.run.config", "privbench.core.yamlsafe", "privbench.run.cache",
                               "privbench.run.isolation", "privbench.run.plugins", "privbench.core.records"}
    for needed in ("privbench.run.evaluate", "privbench.run.scoring", "privbench.core.calibration",
                   "privbench.core.contracts", "privbench.metrics.image", "privbench.models.train"):
        assert needed in covered
