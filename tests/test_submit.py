"""`privbench submit`: hostile submissions are contained with a clear reason, admission refuses what cannot be
evaluated honestly, an identity release ranks leakiest and a noise release scores ~0 at chance utility, and the
leaderboard renders from JSON alone (the submitted source deleted)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from privbench.submit.card import AdmissionError, load_card
from privbench.submit.protocol import Limits, SandboxError
from privbench.submit.session import Session
from privbench.submit.view import filesystem_isolation

ROOT = Path(__file__).resolve().parent.parent

HEADER = """
from dataclasses import dataclass
import torch
from privbench.core.images import ImageSet, Surface
from privbench.core.release import Release, ReleaseMeta
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense
"""


def _source(tmp_path: Path, body: str, name: str = "sub.py") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def _build(session: Session, did: str, n: int = 4) -> tuple[dict, dict]:
    x = torch.rand(n, 1, 8, 8)  # n = 4096: 1 MiB per tensor
    y = torch.zeros(n, dtype=torch.long)
    info = {"name": "t", "num_classes": 2, "shape": [1, 8, 8], "sizes": {}, "hash": "", "split_hashes": {}}
    task = {"model": "convnet", "width": 4, "epochs": 1, "batch_size": 8, "lr": 0.01}
    return session.request("build", {"id": did, "params": {}, "seed": 0, "device": "cpu", "task": task,
                                      "info": info},
                            {"private_images": x, "private_labels": y, "aux_images": x, "aux_labels": y})


BUILD = """
@DEFENSES.register("hostile")
class Hostile(InputDefense):
    def apply(self, images, generator):
        return images

    def build(self, splits, ctx):
{body}
"""


def _hostile(tmp_path: Path, body: str) -> Path:
    return _source(tmp_path, BUILD.format(body=textwrap.indent(textwrap.dedent(body), " " * 8)))


def test_a_crash_in_build_is_reported_with_its_reason_and_the_child_survives(tmp_path) -> None:
    s = Session(_hostile(tmp_path, "raise ValueError('no GPU here')"), Limits(wall_seconds=60))
    try:
        with pytest.raises(SandboxError, match=r"build raised ValueError: no GPU here \(at sub.py:\d+\)"):
            _build(s, "hostile")
        with pytest.raises(SandboxError, match="no GPU here"):  # still answering
            _build(s, "hostile")
    finally:
        s.close()


def test_an_infinite_loop_hits_the_wall_time_limit_and_is_killed(tmp_path) -> None:
    s = Session(_hostile(tmp_path, "while True:\n    pass"), Limits(wall_seconds=3))
    with pytest.raises(SandboxError, match="exceeded the wall-time limit of 3 s"):
        _build(s, "hostile")
    assert s._proc.poll() is not None  # killed and reaped


def test_a_cpu_hog_hits_the_cpu_time_limit(tmp_path) -> None:
    s = Session(_hostile(tmp_path, "while True:\n    pass"), Limits(wall_seconds=120, cpu_seconds=8))
    with pytest.raises(SandboxError, match="CPU-time limit of 8 s"):
        _build(s, "hostile")


def test_a_memory_bomb_hits_the_address_space_limit(tmp_path) -> None:
    s = Session(_hostile(tmp_path, "hoard = [bytearray(1 << 28) for _ in range(64)]  # 16 GiB"),
                Limits(wall_seconds=60, memory_bytes=5 << 30))
    try:
        with pytest.raises(SandboxError, match="MemoryError"):
            _build(s, "hostile")
    finally:
        s.close()


@pytest.mark.skipif(filesystem_isolation() is not None, reason=f"no Landlock here: {filesystem_isolation()}")
def test_writing_outside_its_directory_is_refused(tmp_path) -> None:
    target = tmp_path / "escaped.txt"
    s = Session(_hostile(tmp_path, f"open({str(target)!r}, 'w').write('x')"), Limits(wall_seconds=60))
    try:
        assert s.hello["confined"] is True
        with pytest.raises(SandboxError, match="PermissionError|FileNotFoundError|OSError"):  # absent or denied
            _build(s, "hostile")
    finally:
        s.close()
    assert not target.exists()


@pytest.mark.skipif(filesystem_isolation() is not None, reason=f"no Landlock here: {filesystem_isolation()}")
def test_reading_outside_the_allowed_paths_is_refused(tmp_path) -> None:
    secret = tmp_path / "heldout-seeds.txt"
    secret.write_text("1234\n")
    s = Session(_hostile(tmp_path, f"print(open({str(secret)!r}).read())"), Limits(wall_seconds=60))
    try:
        with pytest.raises(SandboxError, match="PermissionError|FileNotFoundError"):  # absent in its root, or denied
            _build(s, "hostile")
    finally:
        s.close()


def test_a_child_that_stops_reading_its_requests_hits_the_wall_time_limit(tmp_path) -> None:
    body = """
    import fcntl, os
    r, w = os.pipe()
    for fd in range(3, 64):  # put a pipe nobody writes in place of the request pipe, keeping it open unread
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY and fd not in (r, w):
                os.dup(fd)
                os.dup2(r, fd)
        except OSError:
            pass
    return Release(data=ImageSet(splits.private.images, splits.private.labels))
    """
    s = Session(_hostile(tmp_path, body), Limits(wall_seconds=4))
    _build(s, "hostile")
    with pytest.raises(SandboxError, match="stopped reading its requests|wall-time"):
        _build(s, "hostile", n=4096)  # a request larger than the pipe's buffer
    assert s._proc.poll() is not None


def test_the_proxy_module_never_turns_the_submission_path_into_code(tmp_path) -> None:
    from privbench.run.plugins import load_plugin_file
    from privbench.submit.proxies import write_proxy_module

    marker = tmp_path / "injected"
    weird = tmp_path / ('x""" + open(' + repr(str(marker)) + ', "w").write("1") + """y\'.py')
    description = {"weird-path": {"doc": '""" + 1 + """', "surfaces": ["data"], "claims": [], "strength": None,
                                  "modalities": ["image"], "params": [], "problems": []}}
    proxy = write_proxy_module(tmp_path / "proxy.py", weird, "0" * 64, description, Limits())
    module = __import__("sys").modules[load_plugin_file(proxy)]
    assert module.SOURCE == str(weird.resolve()) and not marker.exists()


def test_a_pickle_written_into_the_reply_pipe_is_never_unpickled(tmp_path) -> None:
    marker = tmp_path / "unpickled.txt"
    body = f"""
    import os, pickle
    class Evil:
        def __reduce__(self):
            return (open, ({str(marker)!r}, "w"))
    blob = pickle.dumps(Evil())
    for fd in range(3, 64):
        try:
            os.write(fd, blob)
        except OSError:
            pass
    import time; time.sleep(30)
    """
    s = Session(_hostile(tmp_path, body), Limits(wall_seconds=20))
    with pytest.raises(SandboxError, match="malformed|exceeds the limit|wall-time"):
        _build(s, "hostile")
    assert not marker.exists()


def test_non_tensor_release_fields_are_refused(tmp_path) -> None:
    body = """
    class Evil:
        pass
    return Release(data=ImageSet(splits.private.images, splits.private.labels), meta=ReleaseMeta(extra={"x": Evil()}))
    """
    s = Session(_hostile(tmp_path, body), Limits(wall_seconds=60))
    try:
        with pytest.raises(SandboxError, match="release.meta must hold plain numbers"):
            _build(s, "hostile")
    finally:
        s.close()


def test_a_submission_cannot_shadow_a_built_in_id(tmp_path) -> None:
    path = _source(tmp_path, """
    @DEFENSES.register("blur")
    class FakeBlur(InputDefense):
        def apply(self, images, generator):
            return images
    """)
    with pytest.raises(SandboxError, match="already taken.*'blur'"):
        Session(path, Limits(wall_seconds=60))


CARD = """
name: Test entry
authors: [A. Author]
url: https://example.org
threat_models: [observer, linker]
defenses:
  - id: {id}
"""


def _card(tmp_path: Path, did: str, extra: str = "") -> Path:
    path = tmp_path / "card.yaml"
    path.write_text(CARD.format(id=did) + extra)
    return path


@pytest.mark.parametrize("body,message", [
    ("""
    @DEFENSES.register("mutable")
    class Mutable(InputDefense):
        @dataclass
        class Params:
            k: int = 1
        def apply(self, images, generator):
            return images
    """, "Params must be a frozen dataclass"),
    ("""
    @DEFENSES.register("no-default")
    class NoDefault(InputDefense):
        @dataclass(frozen=True)
        class Params:
            k: int
        def apply(self, images, generator):
            return images
    """, "Params.k has no default"),
    ("""
    @DEFENSES.register("model-side")
    class ModelSide(InputDefense):
        surfaces = frozenset({Surface.DATA, Surface.MODEL})
        def apply(self, images, generator):
            return images
    """, "surfaces model cannot leave the sandbox"),
])
def test_admission_refuses_what_it_cannot_evaluate(tmp_path, body, message) -> None:
    from privbench.submit.admission import describe

    path = _source(tmp_path, body)
    did = body.split('register("')[1].split('"')[0]
    with pytest.raises(AdmissionError, match=message):
        describe(path, load_card(_card(tmp_path, did)), Limits(wall_seconds=60))


def test_admission_refuses_a_card_id_the_submission_does_not_register(tmp_path) -> None:
    from privbench.submit.admission import describe

    path = _source(tmp_path, """
    @DEFENSES.register("present")
    class Present(InputDefense):
        def apply(self, images, generator):
            return images
    """)
    with pytest.raises(AdmissionError, match="'absent' is not registered by sub.py"):
        describe(path, load_card(_card(tmp_path, "absent")), Limits(wall_seconds=60))


@pytest.mark.parametrize("text,message", [
    ("name: x\n", "missing field 'authors'"),
    (CARD.format(id="a").replace("[observer, linker]", "[observer, god-mode]"), "'god-mode' is not a threat model"),
    (CARD.format(id="a") + "    claimed: {utility: 1.5}\n", r"claimed.utility: expected a number in \[0, 1\]"),
    (CARD.format(id="a") + "surprise: 1\n", "unknown field"),
])
def test_bad_cards_name_the_field(tmp_path, text, message) -> None:
    path = tmp_path / "card.yaml"
    path.write_text(text)
    with pytest.raises(AdmissionError, match=message):
        load_card(path)


ENTRIES = """
@DEFENSES.register("leaky-identity")
class LeakyIdentity(InputDefense):
    \"\"\"Releases the images unchanged.\"\"\"
    def apply(self, images, generator):
        return images.clone()


@DEFENSES.register("pure-noise")
class PureNoise(InputDefense):
    \"\"\"Releases uniform noise, independent of the images.\"\"\"
    def apply(self, images, generator):
        return torch.rand(images.shape, generator=generator)


@DEFENSES.register("cheating-transform")
class Cheating(InputDefense):
    \"\"\"Releases the images but shows attackers noise.\"\"\"
    def build(self, splits, ctx):
        return Release(data=ImageSet(splits.private.images.clone(), splits.private.labels.clone()),
                       transform=self.transform, inference_transform=self.transform)
    def apply(self, images, generator):
        return torch.rand(images.shape, generator=generator)
"""

SUITE = """
name: submission-test
datasets: [digits]
seeds: [0]
splits: {private: 200, aux: 200, test: 200, targets: 40}
task: {model: convnet, width: 16, epochs: 10, batch_size: 32, lr: 0.003}
defenses:
  - id: none
attacks:
  - id: linkage
    params: {epochs: 3, width: 8}
"""


def _submit(tmp_path: Path, card: Path, src: Path, *extra: str) -> subprocess.CompletedProcess:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    return subprocess.run([sys.executable, "-m", "privbench", "submit", str(src), "--card", str(card), "--suite",
                           str(suite), "--out", str(tmp_path / "subs" / "entry"), "--no-progress", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_transform_that_does_not_produce_the_release_is_refused(tmp_path) -> None:
    src = _source(tmp_path, ENTRIES)
    r = _submit(tmp_path, _card(tmp_path, "cheating-transform"), src)
    assert r.returncode == 2, r.stderr
    assert "does not reproduce the released data" in r.stderr
    assert not (tmp_path / "subs" / "entry" / "submission.json").exists()


# Slow (55-75 s): the only end-to-end run of a submission. The default run keeps its parts: admission and the
# sandbox's limits above, the committed submissions board below, and noise ~0 / identity ~1 through the runner
# (tests/test_zero_point.py).
@pytest.mark.slow
def test_submit_ranks_identity_leakiest_noise_near_zero_and_the_board_runs_no_submitted_code(tmp_path) -> None:
    src = _source(tmp_path, ENTRIES)
    card = _card(tmp_path, "leaky-identity", "  - id: pure-noise\n    claimed: {utility: 0.95, leakage: {linker: 0.0}}\n")
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("# maintainers' secret seeds\n1234\n")
    r = _submit(tmp_path, card, src, "--heldout-seeds", str(heldout))
    assert r.returncode == 0, r.stdout + r.stderr
    entry = json.loads((tmp_path / "subs" / "entry" / "submission.json").read_text())
    rows = {row["defense"]: row for row in entry["public"]["summary"]}
    leak = {d: rows[d]["leakage"]["linker"]["interval"] for d in ("leaky-identity", "pure-noise")}
    assert leak["leaky-identity"]["mean"] > 0.9  # the identity release is fully linkable (one seed: CI unbounded)
    lo = leak["pure-noise"]["lo"]
    assert abs(leak["pure-noise"]["mean"]) < 0.1 and (lo is None or lo <= 0.0)  # noise: ~0, its CI covers 0
    assert rows["pure-noise"]["utility"]["mean"] < 0.25  # chance is 0.1 on 10 digits
    assert rows["leaky-identity"]["utility"]["mean"] > 0.5
    assert entry["unreliable"] is True  # it claimed 0.95 utility for noise
    assert "1234" not in json.dumps(entry["heldout"])  # held-out seeds stay out of the entry
    assert entry["heldout"]["n_seeds"] == 1
    src.unlink()  # rendering needs no submitted code
    (tmp_path / "subs" / "entry" / "proxy").rename(tmp_path / "proxy-moved")
    out = tmp_path / "board"
    b = subprocess.run([sys.executable, "-m", "privbench", "leaderboard", "build", str(tmp_path / "subs"), "--out",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert b.returncode == 0, b.stderr
    md = (out / "submissions.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| Test entry")]
    assert [line.split("|")[2].strip() for line in table] == ["leaky-identity", "pure-noise"]
    assert "unreliable: utility claimed 0.95" in md
    assert (out / "submissions.html").read_text().count("<table") == 1


def test_the_committed_submissions_leaderboard_is_generated_from_the_committed_entries(tmp_path) -> None:
    from privbench.submit.leaderboard import build

    board, entries = ROOT / "leaderboards" / "submissions", ROOT / "submissions"
    if not board.is_dir():
        pytest.skip("no committed submissions leaderboard")
    if (board / "STALE.md").is_file():  # a declared-stale board keeps its banner
        (tmp_path / "STALE.md").write_bytes((board / "STALE.md").read_bytes())
    written = build(entries, tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in board.iterdir() if p.name != "STALE.md")
    for path in written:
        assert path.read_bytes() == (board / path.name).read_bytes(), path.name


@pytest.mark.parametrize("number", ["1e999", "1" + "0" * 400, "-1e999"])
def test_a_reply_with_an_unbounded_number_is_malformed_not_a_crash(tmp_path, number) -> None:
    body = f"""
    import os, struct
    head = b'{{"ok": true, "meta": {{"epsilon": {number}, "extra": {{}}}}}}'
    frame = struct.pack("<QQ", len(head), 0) + head
    for fd in range(3, 64):
        try:
            if os.get_blocking(fd) is not None and os.fstat(fd).st_mode & 0o010000:  # a pipe
                os.write(fd, frame)
        except OSError:
            pass
    import time; time.sleep(30)
    """
    s = Session(_hostile(tmp_path, body), Limits(wall_seconds=20))
    with pytest.raises(SandboxError, match="malformed reply header .*(not finite|exceeds)"):
        _build(s, "hostile")


@pytest.mark.skipif(filesystem_isolation() is not None, reason=f"no confinement here: {filesystem_isolation()}")
def test_escapes_through_the_real_submit_command_fail_and_leave_nothing(tmp_path) -> None:
    """The issue-23 escape as a submission of `privbench submit`: at import it hijacks `time.sleep` (which the
    child's parent-watch thread calls) and tries the escapes from there, from its own thread and from build; the
    build then answers differently each time so admission refuses it. Nothing is read, written or left behind."""
    secret = tmp_path / "heldout.txt"
    secret.write_text("# maintainers' secret seeds\n987654\n")
    outside = tmp_path / "escaped"
    body = f"""
    import threading, time

    def escape(tag):
        for name, fn in (("read", lambda: open({str(secret)!r}).read()),
                         ("write", lambda: open({str(outside)!r} + tag, "w").write("x")),
                         ("proxy", lambda: open({str(tmp_path / "subs" / "entry" / "proxy")!r} + "/x.py", "w"))):
            try:
                fn()
                print("ESCAPED", tag, name)
            except OSError:
                pass

    _sleep = time.sleep
    def sleep(s):
        escape("-watch")
        _sleep(s)
    time.sleep = sleep
    threading.Thread(target=escape, args=("-thread",)).start()

    @DEFENSES.register("escaper")
    class Escaper(InputDefense):
        def build(self, splits, ctx):
            escape("-build")
            _sleep(1.5)  # the parent-watch thread wakes at least once
            import os
            g = torch.Generator().manual_seed(int.from_bytes(os.urandom(7), "little"))  # differs between children
            noise = torch.rand(splits.private.images.shape, generator=g)
            return Release(data=ImageSet(noise, splits.private.labels))
        def apply(self, images, generator):
            return images
    """
    src = _source(tmp_path, body)
    r = _submit(tmp_path, _card(tmp_path, "escaper"), src, "--heldout-seeds", str(secret))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "failed on a tiny batch" in r.stderr  # its build (and its escapes) ran; then admission refused it
    assert "ESCAPED" not in r.stdout + r.stderr and "987654" not in r.stdout + r.stderr
    assert not list(tmp_path.glob("escaped*"))
    entry = tmp_path / "subs" / "entry"
    assert not (entry / "submission.json").exists() and not (entry / "proxy").exists()


# Slow (about 30 s): the default run keeps the mechanism (tests/test_sandbox_blind.py: the same cheat finds its seed
# without a run key and nothing under one) and the real submit command's confinement (above).
@pytest.mark.slow
def test_a_seed_aware_submission_scores_as_the_identity_release_would(tmp_path) -> None:
    """The issue-23 cheat end to end: it carries the public data, searches its seed (public seeds and the
    held-out one included) and noises only the targets. Under the run key it finds nothing, and its linker leakage
    is the identity release's on public and held-out seeds."""
    from privbench.core.specs import SplitConfig
    from tests.hostile import write_seed_cheat

    pkg = write_seed_cheat(tmp_path / "cheat", SplitConfig(private=200, aux=200, test=200, targets=40))  # SUITE's
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("1234\n")
    card = tmp_path / "card.yaml"
    card.write_text(CARD.format(id="seed-cheat"))
    r = _submit(tmp_path, card, pkg, "--heldout-seeds", str(heldout))
    assert r.returncode == 0, r.stdout + r.stderr
    entry = json.loads((tmp_path / "subs" / "entry" / "submission.json").read_text())
    for column in ("public", "heldout"):
        rows = {row["defense"]: row for row in entry[column]["summary"]}
        cheat, none = rows["seed-cheat"]["leakage"]["linker"]["interval"], rows["none"]["leakage"]["linker"]["interval"]
        assert cheat["mean"] > 0.9 and abs(cheat["mean"] - none["mean"]) < 0.05, (column, cheat, none)
    found = [json.loads(p.read_text())["metrics"]["release"].get("found_seed")
             for p in (tmp_path / "subs" / "entry").glob("*/records/*seed-cheat*.json")]
    assert found and set(found) == {-1}


DP_CLAIMS = """
@DEFENSES.register("identity-claims-dp")
class IdentityClaimsDP(InputDefense):
    \"\"\"Releases the images unchanged and says it is (0.5, 1e-5)-DP.\"\"\"
    def build(self, splits, ctx):
        import dataclasses
        return dataclasses.replace(super().build(splits, ctx), meta=ReleaseMeta(epsilon=0.5, delta=1e-5))
    def apply(self, images, generator):
        return images.clone()


@DEFENSES.register("noise-claims-dp")
class NoiseClaimsDP(InputDefense):
    \"\"\"Releases uniform noise and says it is (0.5, 1e-5)-DP.\"\"\"
    def build(self, splits, ctx):
        import dataclasses
        return dataclasses.replace(super().build(splits, ctx), meta=ReleaseMeta(epsilon=0.5, delta=1e-5))
    def apply(self, images, generator):
        return torch.rand(images.shape, generator=generator)
"""


@pytest.mark.slow
def test_a_submitted_epsilon_is_audited_through_the_sandbox(tmp_path) -> None:
    """Issue 24: a submission's self-reported ε gets the black-box one-run audit (canaries in its private split,
    one more sandboxed build, scored on its release). The identity release claiming ε = 0.5 is refuted and the
    entry is unreliable; noise claiming the same is not refuted."""
    src = _source(tmp_path, DP_CLAIMS)
    card = _card(tmp_path, "identity-claims-dp", "  - id: noise-claims-dp\n")
    r = _submit(tmp_path, card, src)
    assert r.returncode == 0, r.stdout + r.stderr
    entry = json.loads((tmp_path / "subs" / "entry" / "submission.json").read_text())
    eps = {c["defense"]: c for c in entry["claims"] if c["quantity"] == "epsilon (self-reported)"}
    assert eps["identity-claims-dp"]["optimistic"] and eps["identity-claims-dp"]["measured"]["mean"] > 0.5
    assert not eps["noise-claims-dp"]["optimistic"] and eps["noise-claims-dp"]["measured"]["mean"] < 0.5
    assert entry["unreliable"]
