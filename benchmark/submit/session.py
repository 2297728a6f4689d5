"""The trusted side of the sandbox: a :class:`Session` with one confined child (docs/SUBMITTING.md).

A child is confined before anything of it runs: :mod:`privbench.submit.confine`, a single-threaded bootstrap, enters
new namespaces and a private root of read-only binds (:func:`privbench.submit.view.readable_roots`), sets the
resource limits, drops every capability, applies Landlock and a seccomp filter, and only then execs the child's
interpreter (:func:`privbench.submit.child.child_main`). Each request and its reply have a wall-time limit; past it
the child's process group is killed. What the submission prints goes to a log outside its directory, whose last
lines are quoted in errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Mapping, Optional

from torch import Tensor

from privbench.core.textsafe import one_line
from privbench.submit import confine
from privbench.submit.protocol import Limits, SandboxError, encode, read_frame, write_frame
from privbench.submit.view import readable_roots, seccomp_path

# ---------------------------------------------------------------------------------------------------------------
# The trusted side: a session with one child.


def _scrubbed_env(workdir: Path, threads: int) -> dict[str, str]:
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    n = str(threads)
    return {**keep, "HOME": str(workdir), "TMPDIR": str(workdir), "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


class Session:
    """One sandbox child that imported ``source`` (a ``.py`` file or a package directory).

    ``request(op, header, tensors)`` sends one request and waits (at most ``limits.wall_seconds``) for its reply.
    Any failure (a limit, a crash, a malformed reply) kills the child and raises :class:`SandboxError` naming the
    source, the operation and the cause, with the tail of what the child printed.
    """

    def __init__(self, source: str | Path, limits: Limits = Limits(), label: str = "") -> None:
        self.source, self.limits = Path(source).resolve(), limits
        self.label = label or self.source.name
        self._lock = threading.Lock()
        self.base = Path(tempfile.mkdtemp(prefix="privbench-sandbox-")).resolve()
        self.workdir = self.base / "work"  # the only place the child may write
        self.workdir.mkdir()
        self.log = self.base / "child.log"  # outside it: the child holds only its inherited descriptor
        fds: list[int] = []
        try:
            c_read, p_write = os.pipe()  # requests: parent -> child
            fds += [c_read, p_write]
            p_read, c_write = os.pipe()  # replies: child -> parent
            fds += [p_read, c_write]
            view = readable_roots(self.source)
            if any(str(self.workdir).startswith(r.rstrip("/") + "/") for r in view.read):
                raise SandboxError(f"the sandbox directory {self.workdir} lies inside a tree children only read; "
                                   "set TMPDIR elsewhere")
            (self.base / "root").mkdir()  # the child's root is built here (privbench.submit.confine.enter_root)
            # the child imports privbench as installed (a regular or an editable install; -I drops the cwd)
            code = (f"from privbench.submit.child import child_main; "
                    f"child_main({c_read}, {c_write}, {str(self.source)!r}, "
                    f"{json.dumps(dataclasses.asdict(limits))!r})")
            spec = {"exec": [sys.executable, "-I", "-c", code], "cwd": str(self.workdir),
                    "read": list(view.read), "list": list(view.listed), "links": [list(x) for x in view.links],
                    "root": str(self.base / "root"), "write": [str(self.workdir)],
                    "limits": dataclasses.asdict(limits), "path": seccomp_path(),
                    "require": [] if limits.allow_unconfined else ["landlock", "seccomp"]}
            spec_file = self.base / "spec.json"  # read by the bootstrap before it confines itself
            spec_file.write_text(json.dumps(spec))
            with open(self.log, "wb") as log:
                self._proc = subprocess.Popen([sys.executable, "-I", "-S", confine.__file__, str(spec_file)],
                                              cwd=self.workdir,
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              pass_fds=(c_read, c_write), env=_scrubbed_env(self.workdir, limits.threads),
                                              start_new_session=True)
        except BaseException:
            for fd in fds:
                os.close(fd)
            shutil.rmtree(self.base, ignore_errors=True)
            raise
        os.close(c_read)
        os.close(c_write)
        os.set_blocking(p_write, False)
        self._write, self._read = p_write, p_read
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, p_write, p_read, self.base)
        self.hello = self._reply("start-up", time.monotonic() + limits.startup_seconds, 16 << 20)[0]

    def request(self, op: str, header: Optional[Mapping[str, Any]] = None,
                tensors: Optional[Mapping[str, Tensor]] = None,
                max_reply_bytes: int = 16 << 20) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Send one request; the reply may be at most ``max_reply_bytes`` long (callers size it from the request)."""
        with self._lock:
            if not self._finalizer.alive:
                raise SandboxError(f"{self.label}: the sandbox was already closed")
            deadline = time.monotonic() + self.limits.wall_seconds
            try:
                write_frame(self._write, encode({"op": op, **(header or {})}, tensors), deadline)
            except TimeoutError:
                raise self._fail(op, f"stopped reading its requests (wall-time limit {self.limits.wall_seconds:g} s)") \
                    from None
            except OSError as e:
                raise self._fail(op, f"the child is gone ({type(e).__name__})") from None
            return self._reply(op, deadline, max_reply_bytes)

    def _reply(self, op: str, deadline: float, max_bytes: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
        try:
            header, tensors = read_frame(self._read, deadline, max_bytes)
        except TimeoutError:
            limit = self.limits.startup_seconds if op == "start-up" else self.limits.wall_seconds
            raise self._fail(op, f"exceeded the wall-time limit of {limit:g} s") from None
        except (EOFError, OSError):
            raise self._fail(op, self._death()) from None
        except SandboxError as e:
            raise self._fail(op, str(e)) from None
        if not header.get("ok"):
            error = str(header.get("error", "no reason given"))
            if header.get("fatal"):
                raise self._fail(op, error)
            raise SandboxError(f"{self.label}: {op} raised {printable(error)}")
        return header, tensors

    def _death(self) -> str:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the child closed its reply pipe"
        if code == confine.REFUSED:
            return "the sandbox could not be set up"
        if code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name
                sig = f"signal {-code}"
            why = {"SIGXCPU": f"exceeded the CPU-time limit of {self.limits.cpu_seconds} s",
                   "SIGKILL": "was killed (e.g. out of memory)", "SIGXFSZ": "exceeded the file-size limit "
                   f"of {self.limits.file_bytes} bytes", "SIGSEGV": "crashed (segmentation fault)"}.get(sig, sig)
            return f"the child {why}"
        return f"the child exited with status {code}"

    def _fail(self, op: str, cause: str) -> SandboxError:
        self.close_child()
        tail = self.tail()
        self.close()
        return SandboxError(f"{self.label}: {op}: {printable(cause)}" +
                            (f"; its output ends with:\n{tail}" if tail else ""))

    def close_child(self) -> None:
        """Kill the child's process group (what it printed stays readable until :meth:`close`)."""
        _kill(self._proc)

    def tail(self, lines: int = 12, max_bytes: int = 8192) -> str:
        """The last ``lines`` lines of what the child printed (at most ``max_bytes``, control characters removed)."""
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
                text = f.read(max_bytes).decode(errors="replace")
        except OSError:
            return ""
        return "\n".join("  | " + printable(line)[:300] for line in text.strip().splitlines()[-lines:])

    def close(self) -> None:
        self._finalizer()


def printable(text: str) -> str:
    """What a child said, for a message of the trusted side: one line, no control or bidirectional characters."""
    return one_line(text)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group, whether or not the child itself is still alive (its forks die too,
    unless they started a session of their own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _shutdown(proc: subprocess.Popen, write: int, read: int, base: Path) -> None:
    for fd in (write, read):
        try:
            os.close(fd)
        except OSError:
            pass
    _kill(proc)
    _remove(base)


def _remove(base: Path) -> None:
    """Remove a child's directory, however deep the child nested it (``shutil.rmtree`` recurses per level)."""
    try:
        shutil.rmtree(base, ignore_errors=True)
    except RecursionError:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(base)], check=False)
