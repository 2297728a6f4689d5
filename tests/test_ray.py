"""`privbench run --executor ray` on a local Ray instance with 2 CPUs: the same records as the local executor (every
non-cost metric identical), plugins travel with the job, and a worker that dies mid-job is retried without a
duplicate record. Slow (Ray starts a local cluster): ``python -m pytest --runslow tests/test_ray.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from privbench.core.records import iter_records
from tests.conftest import TINY_SUITE, write_suite

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

DIE_ONCE = '''
import os
from pathlib import Path
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense

MARKER = Path({marker!r})


@DEFENSES.register("die-once")
class DieOnce(InputDefense):
    """Releases 1 - x; the first process that builds it dies (a lost Ray worker)."""

    def apply(self, images, generator):
        return 1.0 - images

    def build(self, splits, ctx):
        if not MARKER.exists():
            MARKER.write_text("died")
            os._exit(1)
        return super().build(splits, ctx)
'''


def _run(suite: Path, out: Path, *extra: str, plugin: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "privbench", "run", "--suite", str(suite), "--out", str(out), "--no-progress",
            "--no-report", *extra] + (["--plugin", str(plugin)] if plugin else [])
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "RAY_DEDUP_LOGS": "0"})


def _metrics(out: Path) -> dict[str, dict]:
    recs = {}
    for path, rec in iter_records(out / "records"):
        metrics = {k: v for k, v in rec["metrics"].items() if k != "cost"}
        recs[path.name] = {"status": rec["status"], "metrics": metrics, "key": rec["provenance"]["cell_key"]}
    return recs


def test_ray_executor_matches_the_local_executor_and_survives_a_dying_worker(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    marker = tmp_path / "died"
    plugin = tmp_path / "die_once.py"
    plugin.write_text(DIE_ONCE.format(marker=str(marker)))
    suite = write_suite(tmp_path / "tiny.yaml", TINY_SUITE.replace("  - id: noise\n", "  - id: noise\n  - id: die-once\n"))
    marker.write_text("local runs do not die")
    local = _run(suite, tmp_path / "local", "--jobs", "2", plugin=plugin)  # 1 torch thread per job, as on Ray
    assert local.returncode == 0, local.stderr
    marker.unlink()
    ray = _run(suite, tmp_path / "ray", "--executor", "ray", "--jobs", "2", plugin=plugin)
    assert ray.returncode == 0, ray.stdout + ray.stderr
    assert marker.exists()  # a worker did die, and its job was retried
    a, b = _metrics(tmp_path / "local"), _metrics(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) == 10
    for name in a:
        assert a[name] == b[name], name
    assert len(list((tmp_path / "ray" / "records").iterdir())) == len(a)  # no duplicate, no stray file
