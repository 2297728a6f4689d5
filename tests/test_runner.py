"""Runner end to end: registry-driven coverage, resume after kill -9, bad input, determinism, reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privbench.cli import main
from privbench.core.records import iter_records, read_record
from privbench.report import write_report
from privbench.run.config import load_suite
from privbench.run.runner import run_suite
from privbench.run.worker import RunOptions
from tests.conftest import write_suite


def _run(suite_path: Path, out: Path, jobs: int = 1):
    return run_suite(load_suite(suite_path), RunOptions(out=out, jobs=jobs, progress=False))


def test_resume_after_kill_9(tmp_path, tiny_suite) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "privbench", "run", "--suite", str(tiny_suite), "--out", str(out),
           "--no-progress", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    records = out / "records"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(records.glob("*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.read_bytes() for p in records.glob("*.json")}
    assert 3 <= len(before) < 8, "kill should land mid-run"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"8 cells: {len(before)} reused" in done.stdout
    after = {p.name: p.read_bytes() for p in records.glob("*.json")}
    assert len(after) == 8
    for name, blob in before.items():  # finished cells were not recomputed (byte-identical, same timestamp)
        assert after[name] == blob
    ids = [read_record(records / n)["cell_id"] for n in after]
    assert len(set(ids)) == 8
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert "8 cells: 8 reused, 0 ok" in again.stdout


def _session_processes(sid: int) -> list[int]:
    """PIDs of live processes in session ``sid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session, ...
            out.append(int(stat.parent.name))
    return out


SLEEPER = """
import time
from privbench.core.contracts import Attack
from privbench.core.images import Access, Surface
from privbench.core.registry import ATTACKS


@ATTACKS.register("sleeper-test")
class Sleeper(Attack):
    requires = frozenset({Surface.DATA})
    access = Access.BLACK_BOX

    def run(self, view, ctx):
        time.sleep(600)
"""


def _attack_children(sid: int) -> list[int]:
    """Processes of session ``sid`` whose parent is a fork server (attack and platform children)."""
    out = []
    for pid in _session_processes(sid):
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if b"forkserver" in Path(f"/proc/{ppid}/cmdline").read_bytes():
                out.append(pid)
        except (OSError, IndexError, ValueError):
            continue
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_dead_unreaped_requester_counts_as_gone() -> None:
    """A killed run's workers stay zombies under an init that does not reap (many containers): the attack child's
    watch must not take a zombie for a live worker (found by review: ``kill(pid, 0)`` succeeds on a zombie)."""
    from privbench.run.startup import _alive

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.time() + 10
        while time.time() < deadline and b") Z" not in Path(f"/proc/{pid}/stat").read_bytes():
            time.sleep(0.01)
        assert not _alive(pid)
        assert _alive(os.getpid())
    finally:
        os.waitpid(pid, 0)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_the_driver_ends_its_workers_and_their_attack_children(tmp_path) -> None:
    """SIGKILL on the driver alone (not its group): pool workers, the queue manager and attack children notice and
    exit within seconds instead of computing orphaned cells. An attack child's parent is the fork server, which
    outlived a killed worker: the child (here one that sleeps for 10 minutes) watches the worker that asked for it
    (found in the video suite: LiRA's shadows trained on for minutes after the run was killed)."""
    plugin = tmp_path / "sleeper.py"
    plugin.write_text(SLEEPER)
    suite = write_suite(tmp_path / "s.yaml", "name: s\ndatasets: [digits]\nseeds: [0, 1]\n"
                        "splits: {private: 60, aux: 60, test: 40, targets: 10}\n"
                        "task: {model: convnet, width: 4, epochs: 1}\ndefenses: [none]\n"
                        "attacks: [nearest-neighbour, sleeper-test]\n")
    cmd = [sys.executable, "-m", "privbench", "--plugin", str(plugin), "run", "--suite", str(suite), "--out",
           str(tmp_path / "out"), "--jobs", "2", "--no-progress", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not _attack_children(proc.pid) and proc.poll() is None:
        time.sleep(0.2)
    children = _attack_children(proc.pid)
    assert children, "the sleeping attack's child should have started"
    # the queue manager (the first spawned process) has stored a finished cell by now without
    # unpickling it, so it never loaded torch (290 MB of private memory)
    records = tmp_path / "out" / "records"
    deadline = time.time() + 60
    while time.time() < deadline and not any(records.iterdir()):
        time.sleep(0.2)
    spawned = sorted(pid for pid in _session_processes(proc.pid)
                     if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes())
    assert len(spawned) == 3 and any(records.iterdir())  # the manager (started first) and two workers
    assert b"libtorch" not in Path(f"/proc/{spawned[0]}/maps").read_bytes()
    time.sleep(1.0)
    assert _attack_children(proc.pid), "the sleeper's child must be running when the driver is killed"
    proc.kill()
    proc.wait()
    # they poll every second; under a fully loaded xdist run 20 s and once 45 s were too short, so allow 90 s (an
    # orphaned cell computes for minutes) and name the survivors if any
    deadline = time.time() + 90
    while time.time() < deadline and _session_processes(proc.pid):
        time.sleep(0.2)
    left = _session_processes(proc.pid)
    names = {}
    for pid in left:
        try:
            names[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200].decode(errors="replace")
        except OSError:
            names[pid] = "?"
    for pid in left:  # do not leave them behind even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived the killed driver: {names}"


def test_same_seed_same_metrics_and_identical_reports(tmp_path, tiny_suite) -> None:
    _run(tiny_suite, tmp_path / "a")
    _run(tiny_suite, tmp_path / "b")
    _run(tiny_suite, tmp_path / "c", jobs=2)  # one torch thread per worker: float sums may differ in the last bit
    ra, rb, rc = ({p.name: r["metrics"] for p, r in iter_records(tmp_path / d / "records")} for d in "abc")
    assert ra.keys() == rb.keys() == rc.keys() and len(ra) == 8
    for name in ra:
        for part in ("privacy", "utility", "leakage", "calibrated"):
            assert ra[name][part] == rb[name][part], (name, part)
        for key, value in ra[name]["privacy"].items():
            other = rc[name]["privacy"][key]
            if value is None:
                assert other is None, (name, key)
            else:
                assert other == pytest.approx(value, rel=1e-3, abs=1e-4), (name, key)
    write_report(tmp_path / "a")
    first = {p.name: p.read_bytes() for p in (tmp_path / "a" / "tables").iterdir()}
    write_report(tmp_path / "a")
    second = {p.name: p.read_bytes() for p in (tmp_path / "a" / "tables").iterdir()}
    assert first == second and "tiny.md" in first
    assert (tmp_path / "a" / "plots" / "tiny_digits_privacy_utility.png").stat().st_size > 1000


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("body,match", [
    ("datasets: [imagefolder]\ndataset_options: {imagefolder: {path: /nonexistent/x}}\ndefenses: [none]\n"
     "attacks: [linkage]\n", "path /nonexistent/x does not exist"),
    ("datasets: [digits]\ndefenses: [{id: blurr}]\nattacks: [linkage]\n", "unknown defense id 'blurr'"),
    ("datasets: [digits]\ndefenses: [{id: noise, params: {sigma: [1]}}]\nattacks: [linkage]\n",
     "params.sigma: expected a number"),
])
def test_bad_input_exits_2_without_records(tmp_path, capsys, body: str, match: str) -> None:
    path = write_suite(tmp_path / "bad.yaml", body)
    code, err = _cli(["run", "--suite", str(path), "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 2 and match in err and err.startswith("error:")
    assert not list((tmp_path / "out").glob("records/*.json"))


def test_corrupt_image_and_empty_dir_exit_2(tmp_path, capsys) -> None:
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"garbage")
    body = f"datasets: [imagefolder]\ndataset_options: {{imagefolder: {{path: {root}}}}}\ndefenses: [none]\n" \
           "attacks: [linkage]\n"
    path = write_suite(tmp_path / "s.yaml", body)
    code, err = _cli(["run", "--suite", str(path), "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 2 and "x.png: corrupt or unreadable image" in err
    (root / "a" / "x.png").unlink()
    code, err = _cli(["run", "--suite", str(path), "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 2 and "has no images" in err
    assert not list((tmp_path / "out").glob("records/*.json"))


def test_nan_pixels_from_a_plugin_dataset_exit_2(tmp_path, capsys) -> None:
    plugin = tmp_path / "nanplugin.py"
    plugin.write_text(
        "import torch\nfrom privbench.data import DATASETS, Pool\n"
        "@DATASETS.register('nan-digits')\n"
        "def nan_digits(options):\n"
        "    x = torch.rand(50, 1, 8, 8); x[3, 0, 2, 2] = float('nan')\n"
        "    return Pool(x, torch.arange(50) % 2, 2)\n")
    path = write_suite(tmp_path / "s.yaml", "datasets: [nan-digits]\ndefenses: [none]\nattacks: [linkage]\n")
    code, err = _cli(["--plugin", str(plugin), "run", "--suite", str(path), "--out", str(tmp_path / "o"),
                      "--no-progress"], capsys)
    assert code == 2 and "NaN" in err and "nan-digits" in err
    assert not list((tmp_path / "o").glob("records/*.json"))


def test_crashing_attack_becomes_a_failed_record(tmp_path, capsys) -> None:
    plugin = tmp_path / "crash.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from attacks import ATTACKS\n"
        "from privbench.core.contracts import Access, Attack, Surface\n"
        "@ATTACKS.register('crash-test')\n"
        "class Crash(Attack):\n"
        "    requires = frozenset({Surface.DATA})\n"
        "    access = Access.BLACK_BOX\n"
        "    def run(self, view, ctx):\n"
        "        raise RuntimeError('boom at target 3')\n")
    path = write_suite(tmp_path / "s.yaml", "datasets: [digits]\nsplits: {private: 100, aux: 100, test: 50, "
                       "targets: 10}\ntask: {model: lenet, width: 4, epochs: 1}\ndefenses: [none]\n"
                       "attacks: [crash-test]\n")
    argv = ["--plugin", str(plugin), "run", "--suite", str(path), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 1
    (rec,) = [r for _, r in iter_records(tmp_path / "o" / "records")]
    assert rec["status"] == "failed" and "RuntimeError: boom at target 3" in rec["reason"]
    assert "1 failed" in capsys.readouterr().out
    assert "RuntimeError: boom at target 3 |" in (tmp_path / "o" / "tables" / "s.md").read_text()


def test_cuda_request_without_cuda_is_a_clear_error(tmp_path, capsys, tiny_suite) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = _cli(["run", "--suite", str(tiny_suite), "--out", str(tmp_path), "--device", "cuda"], capsys)
    assert code == 2 and "CUDA" in err


def test_show_and_corrupt_record(tmp_path, capsys) -> None:
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"schema_version": 1}))
    code, err = _cli(["show", str(bad)], capsys)
    assert code == 2 and "missing field 'suite'" in err


def test_list_shows_surfaces_and_requirements(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "inversion-decoder" in out and "requires=data,transform" in out and "surfaces=data,transform" in out


def test_record_validation_rejects_strings_and_nan_in_metrics(tmp_path) -> None:
    from privbench.core.errors import InputError
    from privbench.core.records import validate

    path, good = next((p, r) for p, r in iter_records(Path(__file__).parent.parent / "leaderboards" / "quick" /
                                                      "records") if r["status"] == "ok")
    validate(good, str(path))
    for bad_value, match in (("0.93", "got string"), (float("nan"), "non-finite")):
        bad = json.loads(json.dumps(good))
        bad["metrics"]["utility"]["top1"] = bad_value
        with pytest.raises(InputError, match=match):
            validate(bad, "tmp/x.y.json")
