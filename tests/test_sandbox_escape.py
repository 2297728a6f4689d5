"""A hostile submission tries every escape the issue-23 red team found (and more), from the main thread, from a
thread it starts and from the interpreter's own parent-watch thread (by replacing ``time.sleep`` at import): each
attempt must fail, and nothing the child started may outlive it.

One probe child answers one build; the probes' outcomes come back in the release's metadata (text and numbers only).
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest
import torch

from privbench.submit.protocol import Limits
from privbench.submit.session import Session
from privbench.submit.view import filesystem_isolation, readable_roots

pytestmark = pytest.mark.skipif(filesystem_isolation() is not None,
                                reason=f"no confinement here: {filesystem_isolation()}")

PROBE = '''
import ctypes, errno, json, os, socket, subprocess, threading, time
from dataclasses import dataclass
from privbench.core.images import ImageSet
from privbench.core.release import Release, ReleaseMeta
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense

SECRET, OUTSIDE, MARKER, DATA = {secret!r}, {outside!r}, {marker!r}, {data!r}
LISTENER, DGRAM, HELDOUT_DIR = {listener!r}, {dgram!r}, {heldout!r}
RESULTS = {{}}


def attempt(name, fn):
    try:
        RESULTS[name] = "ok: " + str(fn())[:200]
    except BaseException as e:  # the probe reports whatever stopped it
        RESULTS[name] = "refused: " + type(e).__name__


def escapes(where):
    attempt(f"{{where}}:read-secret", lambda: open(SECRET).read())
    attempt(f"{{where}}:write-outside", lambda: open(OUTSIDE + "-" + where, "w").write("x"))


_sleep = time.sleep
def sleep(seconds):  # the parent-watch thread calls time.sleep: what runs here must be confined too
    if "watch:read-secret" not in RESULTS:
        escapes("watch")
    _sleep(seconds)
time.sleep = sleep


def libc_call(name, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    r = getattr(libc, name)(*args)
    if r == -1:
        raise OSError(ctypes.get_errno(), name)
    return r


def status(field):
    """What /proc/self/status would say (the child has no procfs): from capget and prctl."""
    libc = ctypes.CDLL(None, use_errno=True)
    if field == "CapEff":
        hdr, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
        libc.capget(hdr, data)
        return "%016x" % (data[0] | data[3] << 32)
    if field == "CapBnd":
        return "%016x" % sum(1 << c for c in range(41) if libc.prctl(23, c, 0, 0, 0) == 1)  # PR_CAPBSET_READ
    return str(libc.prctl({{"NoNewPrivs": 39, "Seccomp": 21}}[field], 0, 0, 0, 0))  # PR_GET_NO_NEW_PRIVS, _SECCOMP


def daemon():
    # a plain double fork that sleeps with a marker in its command line (the trusted side checks that no such
    # process survives the child): refused, a child creates no process
    return subprocess.Popen(["/bin/sh", "-c", f"python3 -c 'import time; time.sleep(120)' {{MARKER}} &"]).pid


def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def unix_connect(path, kind):
    if kind == "stream":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(b"escaped")
        return "connected"
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    return a.sendto(b"escaped", path)


def ioctl_setflags(path):
    import array, fcntl
    flags = array.array("l", [0])
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), 0x80086601, flags)  # FS_IOC_GETFLAGS
        flags[0] |= 0x80  # FS_NOATIME_FL
        fcntl.ioctl(f.fileno(), 0x40086602, flags)  # FS_IOC_SETFLAGS
    return flags[0]


def fallocate_keep_size(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_WRONLY)
    if libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(4 << 30)) != 0:  # FALLOC_FL_KEEP_SIZE, 4 GiB
        raise OSError(ctypes.get_errno(), "fallocate")
    return os.fstat(fd).st_blocks


def lease(path):
    import fcntl
    with open(path, "rb") as f:
        return fcntl.fcntl(f.fileno(), 1024, 0)  # F_SETLEASE, F_RDLCK


@DEFENSES.register("probe")
class Probe(InputDefense):
    def apply(self, images, generator):
        return images

    def build(self, splits, ctx):
        escapes("main")
        t = threading.Thread(target=escapes, args=("thread",))
        t.start()
        t.join()
        deadline = time.monotonic() + 5
        while "watch:read-secret" not in RESULTS and time.monotonic() < deadline:
            _sleep(0.1)
        attempt("list-dev", lambda: os.listdir("/dev"))
        attempt("open-dev-null", lambda: open("/dev/null", "w").write("x"))
        attempt("open-dev-urandom", lambda: len(open("/dev/urandom", "rb").read(8)))
        for dev in ("/dev/mem", "/dev/kmsg", "/dev/vda", "/dev/sda", "/dev/tty", "/dev/shm", "/dev/full"):
            attempt("open-" + dev, lambda dev=dev: open(dev, "rb").read(1))
        attempt("read-dataset", lambda: len(open(DATA, "rb").read(16)))
        attempt("setsid", os.setsid)
        attempt("setpgid", lambda: os.setpgid(0, 0))
        attempt("shmget", lambda: libc_call("shmget", 0, 4096, 0o1600))  # IPC_PRIVATE | IPC_CREAT
        attempt("unshare-user", lambda: libc_call("unshare", 0x10000000))
        attempt("ptrace-traceme", lambda: libc_call("ptrace", 0, 0, 0, 0))
        attempt("socket-inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        attempt("chmod-system-file", lambda: os.chmod("/etc/hostname", 0o777))
        attempt("mknod-in-workdir", lambda: os.mknod("node", 0o600 | 0o020000, os.makedev(1, 3)))
        attempt("kill-process-group", lambda: os.kill(0, 0))
        attempt("daemon", daemon)
        attempt("fork", fork)
        attempt("subprocess", lambda: subprocess.run(["/bin/true"]).returncode)
        attempt("socket-unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        attempt("unix-stream-connect", lambda: unix_connect(LISTENER, "stream"))
        attempt("unix-dgram-sendto", lambda: unix_connect(DGRAM, "dgram"))
        attempt("stat-outside", lambda: os.stat(HELDOUT_DIR).st_mode)
        attempt("exists-outside", lambda: os.path.exists(HELDOUT_DIR) or "absent")
        attempt("inotify", lambda: libc_call("inotify_init1", 0))
        attempt("utime-own-source", lambda: os.utime(__file__, (1, 1)))
        attempt("utime-outside", lambda: os.utime(SECRET, (1, 1)))
        attempt("ioctl-setflags", lambda: ioctl_setflags(__file__))
        attempt("lease", lambda: lease(__file__))
        attempt("getrusage", lambda: __import__("resource").getrusage(0).ru_majflt)
        attempt("flock", lambda: __import__("fcntl").flock(open("/etc/hostname"), 6))  # LOCK_EX | LOCK_NB
        attempt("posix-lock", lambda: __import__("fcntl").lockf(open("big", "w"), 6))
        attempt("aio", lambda: libc_call("syscall", 206, 8, ctypes.byref(ctypes.c_ulong(0))))  # io_setup
        attempt("proc-self-stat", lambda: open("/proc/self/stat").read()[:20])
        attempt("fallocate-keep-size", lambda: os.posix_fallocate(os.open("big", os.O_CREAT | os.O_WRONLY), 0, 1)
                or fallocate_keep_size("big"))
        RESULTS["own-status"] = json.dumps({{f: status(f) for f in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp")}})
        attempt("visible-processes", lambda: len([p for p in os.listdir("/proc") if p.isdigit()]))
        RESULTS["applied"] = os.environ.get("PRIVBENCH_CONFINED", "{{}}")
        release = super().build(splits, ctx)
        release.meta = ReleaseMeta(extra=dict(RESULTS))
        return release
'''


def _probe(tmp_path: Path) -> tuple[dict, Path, Path, str, list]:
    import socket
    import threading

    secret = tmp_path / "heldout-seeds.txt"
    secret.write_text("1234\n")
    outside = tmp_path / "escaped"
    heldout = tmp_path / "out" / "heldout"  # what a held-out run's output directory looks like
    heldout.mkdir(parents=True)
    marker = f"privbench-escape-marker-{os.getpid()}-{time.monotonic_ns()}"
    import sklearn

    data = str(Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz")
    assert Path(data).is_file()
    # a uid-0 service on a pathname socket (tmux, a multiprocessing forkserver, docker, D-Bus): what reaches it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "service.sock"))
    listener.listen(4)
    listener.settimeout(0.2)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(str(tmp_path / "syslog.sock"))
    dgram.settimeout(0.2)
    reached: list = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for sock, accept in ((listener, True), (dgram, False)):
                try:
                    reached.append(sock.accept()[0].recv(64) if accept else sock.recv(64))
                except OSError:
                    pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    src = tmp_path / "probe.py"
    src.write_text(textwrap.dedent(PROBE.format(secret=str(secret), outside=str(outside), marker=marker, data=data,
                                                listener=str(tmp_path / "service.sock"),
                                                dgram=str(tmp_path / "syslog.sock"), heldout=str(heldout))))
    before = (src.stat().st_mtime_ns, secret.stat().st_mtime_ns)
    s = Session(src, Limits(wall_seconds=120))
    try:
        x = torch.rand(4, 1, 8, 8)
        y = torch.zeros(4, dtype=torch.long)
        info = {"name": "t", "num_classes": 2, "shape": [1, 8, 8], "sizes": {}, "hash": "", "split_hashes": {}}
        task = {"model": "convnet", "width": 4, "epochs": 1, "batch_size": 8, "lr": 0.01}
        header, _ = s.request("build", {"id": "probe", "params": {}, "seed": 0, "device": "cpu", "task": task,
                                        "info": info},
                              {"private_images": x, "private_labels": y, "aux_images": x, "aux_labels": y})
    finally:
        s.close()
        time.sleep(0.5)
        stop.set()
        server.join()
        listener.close()
        dgram.close()
    assert (src.stat().st_mtime_ns, secret.stat().st_mtime_ns) == before  # no time of any file changed
    return header["meta"]["extra"], secret, outside, marker, reached


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return _probe(tmp_path_factory.mktemp("probe"))


@pytest.mark.parametrize("where", ["main", "thread", "watch"])
def test_no_thread_of_the_child_reads_or_writes_outside(probe, where) -> None:
    results, _, outside, _, _ = probe
    assert results[f"{where}:read-secret"].startswith("refused"), results
    assert results[f"{where}:write-outside"].startswith("refused"), results
    assert not Path(f"{outside}-{where}").exists()


def test_devices_other_than_null_zero_urandom_are_closed(probe) -> None:
    results = probe[0]
    assert results["open-dev-null"].startswith("ok") and results["open-dev-urandom"] == "ok: 8"
    assert results["list-dev"].startswith("refused")
    opened = {k: v for k, v in results.items() if k.startswith("open-/dev/")}
    assert opened and all(v.startswith("refused") for v in opened.values()), opened


def test_the_public_datasets_are_not_readable(probe) -> None:
    assert probe[0]["read-dataset"].startswith("refused"), probe[0]["read-dataset"]


@pytest.mark.parametrize("call", ["setsid", "setpgid", "shmget", "unshare-user", "ptrace-traceme", "socket-inet",
                                  "chmod-system-file", "mknod-in-workdir", "fork", "subprocess", "daemon",
                                  "socket-unix", "unix-dgram-sendto", "inotify", "utime-own-source", "ioctl-setflags",
                                  "lease", "getrusage", "fallocate-keep-size", "flock", "posix-lock", "aio"])
def test_denied_system_calls_fail(probe, call) -> None:
    assert probe[0][call] == "refused: PermissionError", probe[0][call]


def test_the_child_has_no_capability_and_cannot_gain_one(probe) -> None:
    # no capability, an empty bounding set and no_new_privs: whatever it execs (a shell as root, a setuid binary)
    # starts with none either; and it cannot start a process at all (test_denied_system_calls_fail[fork])
    own = json.loads(probe[0]["own-status"])
    assert own == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}


def test_no_service_on_a_pathname_socket_is_reached(probe) -> None:
    """Red-team finding 1 (critical): a uid-0 service listening on a pathname socket (tmux ran the child's command
    as unconfined root; a multiprocessing forkserver unpickled its payload) was reachable through connect()."""
    results, reached = probe[0], probe[4]
    assert results["unix-stream-connect"].startswith("refused") and results["unix-dgram-sendto"].startswith("refused")
    assert reached == []


def test_paths_outside_what_the_child_reads_do_not_exist_for_it(probe) -> None:
    """Red-team finding 3: stat and exists on the run's output told a held-out run from a public one."""
    results = probe[0]
    if not json.loads(results["applied"]).get("root"):
        pytest.skip("no private root without namespaces: paths outside stay stat-able (docs/SUBMITTING.md)")
    assert results["stat-outside"] == "refused: FileNotFoundError"
    assert results["exists-outside"] == "ok: absent"
    assert results["read-dataset"] == "refused: FileNotFoundError"  # not even denied: absent


def test_no_file_time_or_flag_outside_the_child_changes(probe) -> None:
    """Red-team findings 2 and 4: a build child stored a mark in its source's mtime for the reproduction check's
    child to read back, and set inode flags and leases on files it may only read."""
    results = probe[0]
    for attempt in ("utime-own-source", "utime-outside", "ioctl-setflags", "lease"):
        assert results[attempt].startswith("refused"), (attempt, results[attempt])


def test_the_child_sees_no_process_and_no_per_process_counter(probe) -> None:
    """Red-team round 4 (high): the major-fault counter (getrusage, /proc/self/stat) read which pages of a file an
    earlier child had cached. A child has no procfs (only /proc/cpuinfo) and no getrusage."""
    results = probe[0]
    if not json.loads(results["applied"]).get("root"):
        pytest.skip("no private root without namespaces")
    assert results["visible-processes"].startswith("refused") or results["visible-processes"] == "ok: 0"
    assert results["proc-self-stat"].startswith("refused") and results["getrusage"].startswith("refused")


def test_nothing_the_child_started_survives_it(probe) -> None:
    marker = probe[3]
    deadline = time.monotonic() + 5
    while True:
        alive = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    alive.append(pid)
            except OSError:
                continue
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not alive, f"processes started by the sandbox child survived it: {alive}"


def test_no_readable_root_holds_a_dataset_or_the_run_output(tmp_path) -> None:
    from privbench.submit.view import denied_paths

    view = readable_roots(tmp_path / "sub.py")
    read, listed = list(view.read), list(view.listed)
    denied = [os.path.realpath(d) for d in denied_paths() if os.path.lexists(d)]
    for r in read:
        assert not any(r == d or r.startswith(d + "/") or d.startswith(r + "/") for d in denied), r
    assert not any(p.startswith(str(Path.cwd() / "leaderboards")) for p in read + listed)


def test_the_bootstrap_refuses_to_start_a_child_when_a_required_layer_is_missing(tmp_path) -> None:
    import subprocess
    import sys

    from privbench.submit import confine

    marker = tmp_path / "child-ran"
    spec = {"exec": [sys.executable, "-I", "-c", f"open({str(marker)!r}, 'w')"], "cwd": str(tmp_path),
            "read": [], "write": [str(tmp_path)], "limits": {"memory_bytes": 1 << 30, "cpu_seconds": 10,
                                                             "file_bytes": 1 << 20},
            "namespaces": False, "require": ["namespaces"]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-I", "-S", confine.__file__, str(tmp_path / "spec.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == confine.REFUSED
    assert "refused to start the child: cannot create namespaces" in done.stderr
    assert not marker.exists()


def test_every_denied_system_call_is_known_on_this_architecture() -> None:
    """A name libseccomp cannot resolve would be skipped silently: on x86_64 every one must resolve."""
    import ctypes
    import platform

    from privbench.submit.filters import DENIED_SYSCALLS

    if platform.machine() != "x86_64":
        pytest.skip("the list holds x86_64 names that other architectures lack (fork, chmod, ...)")
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    unknown = [n for n in DENIED_SYSCALLS if lib.seccomp_syscall_resolve_name(n.encode()) < 0]
    assert not unknown, unknown


def test_a_child_error_cannot_forge_a_line_of_the_trusted_side(tmp_path) -> None:
    from privbench.submit.protocol import SandboxError

    src = tmp_path / "liar.py"
    src.write_text('raise RuntimeError("x\\nadmitted: all 5 checks passed")\n')
    with pytest.raises(SandboxError) as e:
        Session(src, Limits(wall_seconds=60))
    lines = str(e.value).splitlines()
    assert not any(line.startswith("admitted:") for line in lines), lines
    assert all(line.startswith("  | ") for line in lines[1:]), lines  # what it printed is quoted, never bare


def test_a_child_nesting_its_directory_deeply_still_closes_cleanly(tmp_path) -> None:
    """Red-team round 3 (low): shutil.rmtree recursed out of Session.close on a deeply nested work directory."""
    src = tmp_path / "nest.py"
    src.write_text("import os\nfor _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\n")
    s = Session(src, Limits(wall_seconds=60))
    base = s.base
    s.close()
    assert not base.exists()


def test_without_a_private_root_landlock_and_seccomp_still_confine(tmp_path) -> None:
    """Where mounts are forbidden (a container), the bootstrap goes on without the private root, says so, and the
    child is still confined by Landlock and seccomp."""
    import subprocess
    import sys

    from privbench.submit import confine
    from privbench.submit.view import seccomp_path as _seccomp_path

    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    code = ("import os, json; a = json.loads(os.environ['PRIVBENCH_CONFINED'])\n"
            "try:\n    open(%r).read(); r = 'read'\nexcept OSError:\n    r = 'refused'\n"
            "print(json.dumps({**a, 'secret': r}))") % str(secret)
    view = readable_roots(tmp_path / "none.py")
    (tmp_path / "work").mkdir()
    spec = {"exec": [sys.executable, "-I", "-c", code], "cwd": str(tmp_path / "work"), "read": list(view.read),
            "list": list(view.listed), "links": [list(x) for x in view.links], "root": str(tmp_path / "no-such-dir"),
            "write": [str(tmp_path / "work")], "path": _seccomp_path(), "require": ["landlock", "seccomp"],
            "limits": {"memory_bytes": 8 << 30, "cpu_seconds": 60, "file_bytes": 1 << 20}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-I", "-S", confine.__file__, str(tmp_path / "spec.json")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    applied = json.loads(done.stdout.strip().splitlines()[-1])
    if applied["namespaces"]:
        assert applied["root"] == "" and "no private root" in done.stderr
    assert applied["landlock"] >= 1 and applied["seccomp"] is True and applied["secret"] == "refused"


def test_a_defense_id_with_a_trailing_newline_is_refused() -> None:
    """Red-team finding (2026-12-06): ``re.match`` with ``$`` accepts ``"blur\\n"``, which a submission could register
    beside the built-in ``blur`` and which prints like it. The id rule is a full match, on both sides."""
    from privbench.core.registry import Registry, valid_id
    from privbench.submit.protocol import SandboxError
    from privbench.submit.proxies import validate_description

    assert valid_id("blur") and not valid_id("blur\n") and not valid_id("\nblur") and not valid_id("a" * 65)
    with pytest.raises(ValueError, match="lowercase and hyphenated"):
        Registry("defense").register("blur\n")
    with pytest.raises(SandboxError, match="defense id"):
        validate_description({"blur\n": {"surfaces": ["data"], "claims": [], "modalities": ["image"], "params": []}})


def test_the_bootstrap_compiles_its_filters_from_source(tmp_path) -> None:
    """Red-team note (2026-12-06): run by path, the bootstrap loads ``filters.py`` beside it; a ``.pyc`` planted in
    ``__pycache__`` (by an unconfined child) must not be what runs. The by-path loader compiles the source."""
    import subprocess
    import sys

    from privbench.submit import confine

    code = ("import runpy, sys; g = runpy.run_path(sys.argv[1], run_name='not_main'); "
            "f = g['_filters']; print(f.__file__, getattr(f, '__cached__', None), f.DEVICES)")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, confine.__file__], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    path, cached, _ = done.stdout.split(" ", 2)
    assert path == str(Path(confine.__file__).with_name("filters.py")) and cached == "None"
