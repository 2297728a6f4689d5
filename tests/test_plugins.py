"""Third-party plugins work everywhere: ``--plugin FILE`` before or after the subcommand with any ``--jobs``, entry
points of an installed package, failures inside a plugin's cell; and records cannot outlive their code: editing
one attack re-runs exactly its cells, ``report --check`` names stale and dirty records."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from privbench.core.records import iter_records
from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
from dataclasses import dataclass
from privbench.core.contracts import Attack, AttackOutput
from privbench.core.images import Access, Surface
from privbench.core.errors import InputError
from privbench.core.registry import ATTACKS, DEFENSES
from privbench.defenses.base import InputDefense


@DEFENSES.register("invert-test")
class Invert(InputDefense):
    """Releases 1 - x (a weak, invertible defense)."""

    def apply(self, images, generator):
        return 1.0 - images


@ATTACKS.register("bad-input-test")
class BadInput(Attack):
    requires = frozenset({Surface.DATA})
    access = Access.BLACK_BOX

    def run(self, view, ctx):
        raise InputError("targets must be fewer than 5")
'''

SUITE = """
name: plug
datasets: [digits]
splits: {private: 100, aux: 100, test: 60, targets: 20}
task: {model: convnet, width: 4, epochs: 1}
defenses: [none, invert-test]
attacks:
  - id: linkage
    params: {epochs: 1, width: 4}
  - bad-input-test
"""


def _cli(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, "-m", "privbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("jobs,where", [(1, "before"), pytest.param(2, "after", marks=pytest.mark.slow)])
def test_plugin_file_with_any_jobs_and_a_failing_plugin_cell(tmp_path, jobs: int, where: str) -> None:
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN)
    suite = write_suite(tmp_path / "plug.yaml", SUITE)
    run = ["run", "--suite", str(suite), "--out", str(tmp_path / "o"), "--jobs", str(jobs), "--no-progress",
           "--no-report"]
    args = ["--plugin", str(plugin), *run] if where == "before" else [*run, "--plugin", str(plugin)]
    done = _cli(args)
    assert done.returncode == 1, done.stderr  # a failed cell makes the exit code 1; the suite still finishes
    records = {(r["defense"]["id"], r["attack"]["id"]): r for _, r in iter_records(tmp_path / "o" / "records")}
    assert len(records) == 4
    ok = records[("invert-test", "linkage")]
    assert ok["status"] == "ok" and 0.0 <= ok["metrics"]["privacy"]["top1"] <= 1.0
    assert ok["provenance"]["code"]["defense"]  # spec-loaded modules are hashed
    for d in ("none", "invert-test"):
        failed = records[(d, "bad-input-test")]
        assert failed["status"] == "failed" and failed["reason"] == "InputError: targets must be fewer than 5"
    assert "2 failed" in done.stdout and "failed: digits/invert-test" in done.stdout


@pytest.mark.slow  # 23 s (a pip install); the installed package itself is tested in tests/test_layout.py
def test_entry_point_plugin_of_an_installed_package(tmp_path) -> None:
    site = tmp_path / "site"
    pkg = site / "pb_tiny_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN.replace("invert-test", "ep-invert").replace("bad-input-test", "ep-bad"))
    info = site / "pb_tiny_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pb-tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[privbench.defenses]\ntiny = pb_tiny_plugin\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listed = _cli(["list"], env=env)
    assert listed.returncode == 0 and "ep-invert" in listed.stdout and "ep-bad" in listed.stdout
    suite = write_suite(tmp_path / "ep.yaml", SUITE.replace("invert-test", "ep-invert").replace(
        "  - bad-input-test\n", ""))
    done = _cli(["run", "--suite", str(suite), "--out", str(tmp_path / "o"), "--no-progress", "--no-report"],
                env=env)
    assert done.returncode == 0, done.stderr
    statuses = {r["defense"]["id"]: r["status"] for _, r in iter_records(tmp_path / "o" / "records")}
    assert statuses == {"none": "ok", "ep-invert": "ok"}


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.mark.slow
def test_editing_one_attack_reruns_exactly_its_cells_and_check_names_stale_and_dirty(tmp_path) -> None:
    """In a temporary git copy of the project: a clean run passes ``report --check``; editing one attack makes
    exactly its records stale; re-running recomputes exactly those (now dirty); a clean commit refreshes them."""
    proj = tmp_path / "proj"
    for part in ("benchmark", "defenses", "attacks"):
        shutil.copytree(ROOT / part, proj / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", proj / "pyproject.toml")
    _git(proj, "init", "-q")
    _git(proj, "add", "-A")
    _git(proj, "commit", "-qm", "copy")
    suite = write_suite(tmp_path / "edit.yaml", SUITE.replace("defenses: [none, invert-test]",
                                                              "defenses: [none, blur]").replace(
        "  - bad-input-test\n", "  - id: inversion-decoder\n    params: {epochs: 1, width: 4}\n"))
    run = ["run", "--suite", str(suite), "--out", str(tmp_path / "o"), "--no-progress", "--no-report"]
    check = ["report", "--check", str(tmp_path / "o")]
    env = {"PYTHONPATH": str(proj)}

    first = _cli(run, cwd=proj, env=env)
    assert first.returncode == 0 and "4 cells: 0 reused, 4 ok" in first.stdout, first.stderr
    assert _cli(check, cwd=proj, env=env).returncode == 0

    with open(proj / "attacks" / "linkage.py", "a") as f:
        f.write("\n# an edit\n")
    stale = _cli(check, cwd=proj, env=env)
    assert stale.returncode == 1
    flagged = sorted(line.split(":")[0] for line in stale.stdout.splitlines() if "stale" in line)
    assert len(flagged) == 2 and all("__linkage-" in f for f in flagged), stale.stdout
    assert "attack code differs" in stale.stdout

    second = _cli(run, cwd=proj, env=env)
    assert "4 cells: 2 reused, 2 ok" in second.stdout, second.stdout + second.stderr
    dirty = _cli(check, cwd=proj, env=env)
    assert dirty.returncode == 1 and dirty.stdout.count("produced by a dirty tree") == 2

    _git(proj, "commit", "-qam", "edit linkage")
    third = _cli(run, cwd=proj, env=env)
    assert "4 cells: 2 reused, 2 ok" in third.stdout, third.stdout  # the dirty records are refreshed
    assert _cli(check, cwd=proj, env=env).returncode == 0
