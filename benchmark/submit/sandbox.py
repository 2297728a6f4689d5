"""Sandboxed third-party defenses: submitted code runs only in a limited child process (docs/SUBMITTING.md).

The trusted side (driver, pool workers, attack processes) never imports a submission. It registers *proxy*
defenses (:func:`proxy_classes`) whose ``build`` / ``transform`` / ``mask_generator`` / ``public_info`` forward to
a :class:`Session`: a child Python process that imported the submission and nothing else of the run.

Every request runs in a fresh child that answers it and is closed (:class:`SandboxedDefense`). A child is confined
before anything of it runs: :mod:`privbench.submit.confine`, a single-threaded bootstrap, enters new namespaces and a
private root of read-only binds, sets the resource limits, drops every capability, applies Landlock and a seccomp
filter, and only then execs the child's interpreter (:func:`child_main`). What a child may read is
:func:`readable_roots` (system directories, the interpreter, the project's packages and the submission, minus the
public datasets and the machine's secrets); it writes only in its own temporary directory. Each request and its
reply have a wall-time limit; past it the child's process group is killed. Seeds and generator states a child
sees are keyed by the run key (:mod:`privbench.core.keys`). docs/SUBMITTING.md has the threat model, including what
stays open (timing side channels, the disk beyond one file's size limit). Run submissions of unknown authors in a
disposable VM or container, as an unprivileged user without network; this sandbox is the second layer.

Requests and replies are length-framed JSON headers plus tensors in the safetensors format, over two pipes that
are not the child's stdout/stderr (what the submission prints goes to a log outside its directory, whose last lines
are quoted in errors). Nothing is ever unpickled: a malformed reply is an error, not a code path. Everything the
child reports is validated again here (:func:`validate_description`, the release checks in
:class:`SandboxedDefense`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import keyword
import math
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import typing
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from privbench.core import keys
from privbench.core.contracts import (
    DatasetInfo,
    Defense,
    ImageSet,
    Modality,
    Release,
    ReleaseMeta,
    RunContext,
    Splits,
    Surface,
    TaskConfig,
)
from privbench.core.errors import InputError
from privbench.core.keys import run_key
from privbench.core.paths import checkout_root, package_dir, package_dirs
from privbench.core.textsafe import one_line
from privbench.core.threats import ThreatModel
from privbench.submit import confine

#: Surfaces a sandboxed defense may expose: plain tensors cross the process boundary; modules do not.
SANDBOX_SURFACES = frozenset({Surface.DATA, Surface.TRANSFORM, Surface.MASK, Surface.SYNTHETIC})
#: Params field types a sandboxed defense may declare (YAML scalars, optional or in tuples).
_SCALARS = {"bool": bool, "int": int, "float": float, "str": str}
_HEADER = struct.Struct("<QQ")
_MAX_HEADER = 1 << 20


class SandboxError(RuntimeError):
    """The submission failed, broke a limit or answered out of protocol; the message says which and why."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox child (defaults fit the ``submission`` suite on a 2-core, 24 GiB machine)."""

    wall_seconds: float = 900.0  # per request (a build trains nothing heavier than the suite's task model)
    startup_seconds: float = 120.0  # importing torch, the built-ins and the submission
    cpu_seconds: int = 3600  # for the child's whole life
    memory_bytes: int = 8 << 30  # address space: torch and the built-ins alone map ~3.7 GiB (RSS ~0.5 GiB)
    file_bytes: int = 256 << 20  # largest file the child may write (in its own directory)
    threads: int = 1
    #: Start the child even where Landlock or seccomp cannot be applied (only inside a disposable VM or container).
    allow_unconfined: bool = False

    def __post_init__(self) -> None:
        if not (self.wall_seconds > 0 and self.startup_seconds > 0 and self.cpu_seconds > 0 and self.memory_bytes > 0 and self.file_bytes >= 0
                and self.threads >= 1):
            raise InputError(f"sandbox limits must be positive, got {self}")


def filesystem_isolation() -> Optional[str]:
    """``None`` when a child can be confined here (Landlock and seccomp: :mod:`privbench.submit.confine`), else why not.
    Without them a submission is refused unless the caller allows running it unconfined."""
    from privbench.submit.confine import landlock_abi

    if not sys.platform.startswith("linux"):
        return f"Landlock and seccomp are Linux-only (platform {sys.platform})"
    abi = landlock_abi()
    if abi < 1:
        return "Landlock is unavailable in this kernel (Linux >= 5.13 with landlock among the LSMs)"
    try:
        import pyseccomp  # noqa: F401 - only its presence (and libseccomp's) is checked here
    except (ImportError, RuntimeError) as e:
        return f"seccomp is unavailable ({type(e).__name__}: {e}); pip install pyseccomp, apt-get install libseccomp2"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Framing: JSON header + safetensors payload. Never pickle.


def encode(header: Mapping[str, Any], tensors: Optional[Mapping[str, Tensor]] = None) -> bytes:
    from safetensors.torch import save

    head = json.dumps(header, allow_nan=False).encode()
    plain: dict[str, Tensor] = {}
    storages: set[int] = set()
    for k, v in (tensors or {}).items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        plain[k] = v.clone() if ptr in storages else v  # safetensors refuses tensors sharing memory
        storages.add(ptr)
    body = save(plain) if plain else b""
    return _HEADER.pack(len(head), len(body)) + head + body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a reply")


#: Largest magnitudes in a frame's header: floats (seconds, bits, self-reported epsilon) and integers (sizes,
#: 63-bit seeds). Beyond them, or not finite (``1e999`` parses to infinity), a frame is malformed, not a value
#: that crashes the trusted side later.
MAX_NUMBER, MAX_INT = 1e15, (1 << 63) - 1


def _bounded_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise ValueError(f"number {text[:40]} is not finite or exceeds {MAX_NUMBER:g}")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:  # before int(): a 10**400 literal is refused without building it
        raise ValueError(f"integer of {len(text)} digits exceeds 2**63")
    value = int(text)
    if abs(value) > MAX_INT:
        raise ValueError(f"integer {text} exceeds 2**63")
    return value


def decode(head: bytes, body: bytes) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Parse a frame; anything but a JSON object and a safetensors payload raises :class:`SandboxError`."""
    from safetensors.torch import load

    try:
        header = json.loads(head.decode(), parse_constant=_no_constant, parse_float=_bounded_float,
                            parse_int=_bounded_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SandboxError(f"malformed reply header ({type(e).__name__}: {str(e)[:200]}); replies are JSON + "
                           "safetensors, never pickles") from None
    if not isinstance(header, dict):
        raise SandboxError("malformed reply header: not a JSON object")
    try:
        tensors = load(body) if body else {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types on bad bytes
        raise SandboxError(f"malformed tensor payload ({type(e).__name__}: {e}); expected safetensors") from None
    return header, tensors


def _read_exact(fd: int, n: int, deadline: Optional[float], what: str) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(what)
        chunk = os.read(fd, min(n - got, 1 << 22))
        if not chunk:
            raise EOFError(what)
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: Optional[float], max_bytes: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
    head_len, body_len = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline, "header"))
    if head_len > _MAX_HEADER or body_len > max_bytes:
        raise SandboxError(f"reply of {head_len} + {body_len} bytes exceeds the limit ({max_bytes} bytes)")
    head = _read_exact(fd, head_len, deadline, "header")
    return decode(head, _read_exact(fd, body_len, deadline, "payload"))


def write_frame(fd: int, frame: bytes, deadline: Optional[float] = None) -> None:
    """Write ``frame``; with a ``deadline``, ``fd`` must be non-blocking and a reader that stops reading raises
    :class:`TimeoutError` instead of blocking forever."""
    view = memoryview(frame)
    while view:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError("request")
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue


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
            code = (f"from privbench.submit.sandbox import child_main; "
                    f"child_main({c_read}, {c_write}, {str(self.source)!r}, "
                    f"{json.dumps(dataclasses.asdict(limits))!r})")
            spec = {"exec": [sys.executable, "-I", "-c", code], "cwd": str(self.workdir),
                    "read": list(view.read), "list": list(view.listed), "links": [list(x) for x in view.links],
                    "root": str(self.base / "root"), "write": [str(self.workdir)],
                    "limits": dataclasses.asdict(limits), "path": _seccomp_path(),
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
            raise SandboxError(f"{self.label}: {op} raised {_printable(error)}")
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
        return SandboxError(f"{self.label}: {op}: {_printable(cause)}" +
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
        return "\n".join("  | " + _printable(line)[:300] for line in text.strip().splitlines()[-lines:])

    def close(self) -> None:
        self._finalizer()


def _printable(text: str) -> str:
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


# ---------------------------------------------------------------------------------------------------------------
# The child.

#: System directories a child may read (and execute from), besides Python's prefixes and the project's packages;
#: :func:`denied_paths` are cut out of them. No /dev: :data:`privbench.submit.confine.DEVICES` only.
#: No procfs but /proc/cpuinfo (torch reads it): per-process counters such as the major page faults of
#: /proc/self/stat tell which pages of a file an earlier child cached.
_SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt", "/proc/cpuinfo",
                "/sys/devices/system/cpu")
#: Secrets of the machine under the system directories.
_SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/ssh", "/etc/ssl/private",
            "/etc/sudoers", "/etc/sudoers.d", "/etc/security/opasswd")


def denied_paths() -> list[str]:
    """What a child never reads even inside a readable directory: every public dataset's files (a child holding
    the public data could match its private images to dataset indices: :func:`privbench.data.data_paths`) and the
    machine's secrets."""
    from privbench.data import data_paths

    return sorted({*data_paths(), *_SECRETS})


@dataclass(frozen=True)
class ChildView:
    """What a sandbox child sees of the file system (:func:`readable_roots`): ``read``, disjoint trees it may read;
    ``listed``, directories carved around a denied entry (their other entries are in ``read``); ``links``, the
    symbolic links among and inside them, ``(path, target)``, recreated as links in the child's root."""

    read: tuple[str, ...]
    listed: tuple[str, ...]
    links: tuple[tuple[str, str], ...]


def _carve(root: str, denied: list[str], view: dict[str, set]) -> None:
    """Add ``root`` to ``view``: the root itself when nothing denied lies inside, else its entries, each carved in
    turn, with ``root`` among the listed directories. Symbolic links are kept as links, never followed (a rule or a
    bind mount on one would cover its target)."""
    if os.path.islink(root):
        view["links"].add((root, os.readlink(root)))
        return
    inside = [d for d in denied if d == root or d.startswith(root.rstrip("/") + "/")]
    if not inside:
        view["read"].add(root)
        return
    if root in inside or not os.path.isdir(root):
        return
    view["listed"].add(root)
    for entry in sorted(os.listdir(root)):
        _carve(os.path.join(root, entry), inside, view)


def readable_roots(source: Path) -> ChildView:
    """What a child may read: system directories, the interpreter's prefixes and site-packages, the project's own
    packages (``benchmark``, ``defenses``, ``attacks``: not the rest of the checkout, where results and held-out
    files may live) and the submission itself, minus :func:`denied_paths`. Not ``/home``, ``/root`` outside the
    interpreter, ``/tmp``, ``/var``, ``/dev`` or the run's output."""
    import site

    root = checkout_root()
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), *_SYSTEM_READ,
             *(str(p) for p in package_dirs()), str(Path(source).resolve())}
    denied = [os.path.realpath(d) for d in denied_paths() if os.path.lexists(d)]
    view: dict[str, set] = {"read": set(), "listed": set(), "links": set()}
    for r in sorted(roots):
        if os.path.lexists(r):
            if os.path.islink(r):  # e.g. /lib -> usr/lib: the link, and what it names
                view["links"].add((r, os.readlink(r)))
            _carve(os.path.realpath(r), denied, view)
    view["listed"].add(str(root))  # its names, so the child imports the project from here (not its files)
    read = sorted(view["read"])
    disjoint = [p for i, p in enumerate(read) if not any(p.startswith(q.rstrip("/") + "/") for q in read[:i])]
    def inside(p: str) -> bool:
        return any(p == q or p.startswith(q.rstrip("/") + "/") for q in disjoint)
    return ChildView(tuple(disjoint), tuple(sorted(p for p in view["listed"] if not inside(p))),
                     tuple(sorted((p, t) for p, t in view["links"] if not inside(os.path.dirname(p)))))


def readable_by_child(path: str | Path) -> bool:
    """Whether a sandbox child could read ``path`` or anything beneath it, now or once it is created: it lies in
    or contains one of :func:`readable_roots` (for any submission placed elsewhere), or would be a new entry of a
    directory that is carved around a denied path (whose other entries are readable)."""
    p = os.path.realpath(path)
    view = readable_roots(Path("/nonexistent-submission"))
    read, listed = view.read, view.listed
    if any(p == r or p.startswith(r.rstrip("/") + "/") or r.startswith(p.rstrip("/") + "/") for r in read):
        return True
    first = Path(p)
    while not first.exists() and first != first.parent:
        first = first.parent
    return str(first) != p and str(first) in set(listed)


def _seccomp_path() -> list[str]:
    """Where ``pyseccomp`` lives, for the bootstrap (which runs without site packages)."""
    import importlib.util

    spec = importlib.util.find_spec("pyseccomp")
    return [str(Path(spec.origin).parent)] if spec is not None and spec.origin else []


def _import_source(path: Path) -> None:
    """Import a submission: a ``.py`` file or a package directory (its ``__init__.py`` registers the defenses).
    Its exceptions propagate as they are."""
    import importlib.util

    if path.is_file():
        init, search = path, None
    elif (path / "__init__.py").is_file():
        init, search = path / "__init__.py", [str(path)]
    else:
        raise InputError(f"{path}: expected a Python file or a package directory with __init__.py")
    name = f"privbench_submission_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=search)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: cannot import it")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _type_name(tp: Any) -> Optional[str]:
    """``float`` / ``Optional[int]`` / ``tuple[str, ...]`` for supported Params field types, else ``None``."""
    for name, t in _SCALARS.items():
        if tp is t:
            return name
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and len(args) == 2 and type(None) in args:
        inner = _type_name(next(a for a in args if a is not type(None)))
        return None if inner is None or "[" in inner else f"Optional[{inner}]"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS.values():
        return f"tuple[{_type_name(args[0])}, ...]"
    return None


def _describe(cls: type) -> dict[str, Any]:
    """What the trusted side needs to register a proxy of ``cls``, plus the problems the child can see (the trusted
    side checks the description again: :func:`validate_description`)."""
    problems = []
    params: list[dict[str, Any]] = []
    P = getattr(cls, "Params", None)
    if P is None or not dataclasses.is_dataclass(P):
        problems.append("Params must be a dataclass")
    else:
        if not P.__dataclass_params__.frozen:
            problems.append("Params must be a frozen dataclass (@dataclass(frozen=True))")
        hints = typing.get_type_hints(P)
        for f in dataclasses.fields(P):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"Params.{f.name} has no default")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            tname = _type_name(hints.get(f.name))
            if tname is None:
                problems.append(f"Params.{f.name}: type {hints.get(f.name)!r} is not supported (use bool, int, "
                                "float, str, Optional[...] of one, or tuple[..., ...])")
                continue
            params.append({"name": f.name, "type": tname,
                           "default": list(default) if isinstance(default, tuple) else default})
    surfaces = getattr(cls, "surfaces", None) or frozenset()
    return {"doc": cls.describe(), "surfaces": sorted(getattr(x, "value", str(x)) for x in surfaces),
            "claims": sorted(getattr(t, "value", str(t)) for t in getattr(cls, "claims", frozenset())),
            "strength": getattr(cls, "strength", None),
            "modalities": sorted(getattr(m, "value", str(m)) for m in getattr(cls, "modalities", frozenset())),
            "params": params, "problems": problems}


def _imageset(tensors: Mapping[str, Tensor], prefix: str) -> ImageSet:
    return ImageSet(tensors[f"{prefix}images"], tensors[f"{prefix}labels"],
                    *(tensors.get(f"{prefix}{k}") for k in ("identities", "masks", "keypoints")))


def _release_reply(release: Any) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if not isinstance(release, Release):
        raise TypeError(f"build returned {type(release).__name__}, expected privbench.core.contracts.Release")
    bad = sorted(s.value for s in release.surfaces - SANDBOX_SURFACES)
    if bad:
        raise TypeError(f"the release exposes {', '.join(bad)}, which cannot leave the sandbox")
    meta = dataclasses.asdict(release.meta)
    meta["extra"] = dict(release.meta.extra)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"release.meta must hold plain numbers and strings ({e})") from None
    tensors: dict[str, Tensor] = {}
    if release.data is not None:
        tensors["data_images"], tensors["data_labels"] = release.data.images, release.data.labels
    if release.mask is not None:
        tensors["mask"] = release.mask
    if release.synthetic is not None:
        tensors["synthetic_images"], tensors["synthetic_labels"] = release.synthetic.images, release.synthetic.labels
    for k, v in tensors.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"release field {k} must be a torch.Tensor, got {type(v).__name__}")
    return {"ok": True, "meta": meta}, {k: v.detach().to(torch.bool if k == "mask" else v.dtype)
                                        for k, v in tensors.items()}


def _generator(tensors: Mapping[str, Tensor]) -> torch.Generator:
    g = torch.Generator()
    g.set_state(tensors["generator_state"])
    return g


def _reseed_globals(header: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> None:
    """Global RNGs (torch, numpy, random) reseeded from the request itself, so a defense that (wrongly) draws from
    them gives the same answer whatever was asked before in this child."""
    import random

    import numpy as np

    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    if "generator_state" in tensors:
        h.update(tensors["generator_state"].numpy().tobytes())
    seed = int.from_bytes(h.digest()[:4], "little")
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def child_main(read_fd: int, write_fd: int, source: str, limits_json: str) -> None:
    """The sandbox child: import the built-ins and then the submission, answer requests.

    Runs as ``python -I -c`` in the child's directory, exec'd by :mod:`privbench.submit.confine` after every limit and
    restriction was applied to the single-threaded bootstrap: nothing here, submitted or not, runs unconfined."""
    from privbench.core.registry import DEFENSES
    from privbench.core.seeding import set_deterministic
    from privbench.run.isolation import exit_with_parent
    from privbench.run.plugins import load_builtins

    limits = json.loads(limits_json)
    sys.dont_write_bytecode = True
    exit_with_parent()
    torch.set_num_threads(int(limits["threads"]))
    set_deterministic()
    load_builtins()
    builtin = set(DEFENSES)

    def send(header: Mapping[str, Any], tensors: Optional[Mapping[str, Tensor]] = None) -> None:
        write_frame(write_fd, encode(header, tensors))

    def error(e: BaseException) -> dict[str, Any]:
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                      if not f.filename.startswith(str(package_dir()))), "")
        return {"ok": False, "error": f"{type(e).__name__}: {str(e)[:2000]}" + (f" (at {where})" if where else "")}

    confined = json.loads(os.environ.get("PRIVBENCH_CONFINED", "{}"))
    try:
        _import_source(Path(source))
    except KeyError as e:
        if e.args and str(e.args[0]).startswith("duplicate defense id"):  # the registry's own error
            send({"ok": False, "fatal": True, "error": f"registers an id that is already taken: {e.args[0]}"})
            return
        send({**error(e), "fatal": True, "error": f"import failed: {error(e)['error']}"})
        return
    except BaseException as e:  # noqa: BLE001 - report any import failure as data
        send({**error(e), "fatal": True, "error": f"import failed: {error(e)['error']}"})
        return
    new = sorted(set(DEFENSES) - builtin)
    send({"ok": True, "defenses": {i: _describe(DEFENSES.get(i)) for i in new},
          "confined": bool(confined.get("landlock")) and confined.get("seccomp") is True})
    instances: dict[str, Defense] = {}
    while True:
        try:
            header, tensors = read_frame(read_fd, None, 1 << 40)
        except EOFError:
            return
        try:
            _reseed_globals(header, tensors)
            key = json.dumps([header["id"], header["params"]], sort_keys=True)
            if key not in instances:
                cls = DEFENSES.get(header["id"])
                instances[key] = cls(cls.Params(**{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in header["params"].items()}))
            d = instances[key]
            op = header["op"]
            if op == "build":
                info = header["info"]
                splits = Splits(private=_imageset(tensors, "private_"), aux=_imageset(tensors, "aux_"),
                                test=_imageset(tensors, "aux_").subset(torch.arange(0)),
                                targets=torch.zeros(0, dtype=torch.long),
                                info=DatasetInfo(info["name"], info["num_classes"], tuple(info["shape"]),
                                                 info["sizes"], info["hash"], info["split_hashes"]))
                ctx = RunContext(seed=int(header["seed"]), device=torch.device(header["device"]),
                                 task=TaskConfig(**header["task"]))
                send(*_release_reply(d.build(splits, ctx)))
            elif op == "transform":
                x = _imageset(tensors, "") if "labels" in tensors else tensors["images"]
                g = _generator(tensors)
                send({"ok": True}, {"images": d.transform(x, g), "generator_state": g.get_state()})
            elif op == "mask":
                g = _generator(tensors)
                send({"ok": True}, {"mask": d.mask_generator(tensors["images"], g).to(torch.bool),
                                    "generator_state": g.get_state()})
            elif op == "public_info":
                info = d.public_info(tuple(header["shape"]))
                json.dumps(info, allow_nan=False)
                send({"ok": True, "info": info})
            else:
                send({"ok": False, "error": f"unknown operation {op!r}"})
        except BaseException as e:  # noqa: BLE001 - the submission's exception is data for the trusted side
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            send(error(e))


# ---------------------------------------------------------------------------------------------------------------
# Proxy defenses (trusted side).

_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_TYPES = ("bool", "int", "float", "str") + tuple(f"Optional[{t}]" for t in ("bool", "int", "float", "str")) + \
    tuple(f"tuple[{t}, ...]" for t in ("bool", "int", "float", "str"))
#: The key of a proxy used outside ``privbench submit`` (admission tests, a maintainer's own run): public, so such
#: runs are not protected from a seed-aware submission; ``submit`` always sets a secret run key
#: (:mod:`privbench.core.keys`).
UNKEYED = hashlib.sha256(b"privbench public seeds").digest()


def _valid_default(value: Any, tname: str) -> bool:
    if tname.startswith("Optional["):
        return value is None or _valid_default(value, tname[9:-1])
    if tname.startswith("tuple["):
        return isinstance(value, list) and all(_valid_default(v, tname[6:].split(",")[0]) for v in value)
    if tname == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is _SCALARS[tname]


def validate_description(defenses: Any) -> tuple[dict[str, Any], list[str]]:
    """Check a child's description of its defenses here, on the trusted side (the child could forge it):
    returns ``(cleaned description, problems)``; a malformed description raises :class:`SandboxError`."""
    try:
        return _validate_description(defenses)
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # a forged shape the checks below did not foresee
        raise SandboxError(f"malformed description ({type(e).__name__}: {_printable(str(e))[:200]})") from None


def _validate_description(defenses: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(defenses, dict):
        raise SandboxError("malformed description: not a mapping of defense ids")
    clean: dict[str, Any] = {}
    problems: list[str] = []
    surface_names, threat_names = {s.value for s in Surface}, {t.value for t in ThreatModel}
    for did, d in sorted(defenses.items()):
        if not isinstance(did, str) or not _ID.match(did) or len(did) > 64:
            raise SandboxError(f"malformed description: defense id {did!r}")
        if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in
                                              ("surfaces", "claims", "modalities", "params")) \
                or not isinstance(d.get("problems", []), list) \
                or not all(isinstance(x, str) for k in ("surfaces", "claims", "modalities") for x in d[k]):
            raise SandboxError(f"malformed description of {did!r}")
        problems += [f"defense {did!r}: {_printable(str(p))[:300]}" for p in d.get("problems", [])]
        surfaces = sorted(x for x in d["surfaces"] if x in surface_names)
        if len(surfaces) != len(d["surfaces"]) or not surfaces:
            problems.append(f"defense {did!r}: declare its surfaces (class attribute `surfaces`)")
        outside = sorted(x for x in surfaces if Surface(x) not in SANDBOX_SURFACES)
        if outside:
            problems.append(f"defense {did!r}: surfaces {', '.join(outside)} cannot leave the sandbox (allowed: "
                            f"{', '.join(sorted(x.value for x in SANDBOX_SURFACES))})")
        claims = sorted(t for t in d["claims"] if t in threat_names)
        if len(claims) != len(d["claims"]):
            problems.append(f"defense {did!r}: claims must be threat models ({', '.join(sorted(threat_names))})")
        modalities = sorted(m for m in d["modalities"] if m in {m.value for m in Modality}) or [Modality.IMAGE.value]
        params = []
        for p in d["params"]:
            name, tname = (p.get("name"), p.get("type")) if isinstance(p, dict) else (None, None)
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
                    or name.startswith("_") or tname not in _TYPES:
                raise SandboxError(f"malformed description of {did!r}: params field {_printable(repr(p))[:200]}")
            if not _valid_default(p.get("default"), tname):
                problems.append(f"defense {did!r}: Params.{name} default {_printable(repr(p.get('default')))[:100]} "
                                f"is not a {tname}")
                continue
            params.append({"name": name, "type": tname, "default": p["default"]})
        strength = d.get("strength")
        if strength is not None and not any(p["name"] == strength and p["type"] in ("int", "float") for p in params):
            problems.append(f"defense {did!r}: strength = {_printable(repr(strength))[:100]} must name a numeric "
                            "Params field")
            strength = None
        doc = d.get("doc") if isinstance(d.get("doc"), str) else ""
        clean[did] = {"doc": _printable(doc)[:300], "surfaces": surfaces, "claims": claims, "strength": strength,
                      "modalities": modalities, "params": params}
    return clean, problems


def _field_type(name: str) -> Any:
    if name.startswith("Optional["):
        return Optional[_field_type(name[9:-1])]
    if name.startswith("tuple["):
        return tuple[_SCALARS[name[6:].split(",")[0]], ...]
    return _SCALARS[name]


def _tensors_of(prefix: str, s: ImageSet) -> dict[str, Tensor]:
    out = {f"{prefix}images": s.images, f"{prefix}labels": s.labels}
    for k in ("identities", "masks", "keypoints"):
        if getattr(s, k) is not None:
            out[f"{prefix}{k}"] = getattr(s, k)
    return out


def _nbytes(tensors: Mapping[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _key() -> bytes:
    return run_key() or UNKEYED


def keyed_seed(seed: int) -> int:
    """The seed a sandbox child sees for cell seed ``seed``, keyed by the run key (:mod:`privbench.core.keys`): a child
    cannot recompute the splits from it, nor tell a public seed from a held-out one."""
    return keys.keyed_seed(_key(), "seed", seed)


def _child_state(generator: torch.Generator) -> Tensor:
    """The state a child's generator starts from for a call with ``generator``: keyed from its state, which then
    advances by one draw (successive calls get fresh randomness, as in-process)."""
    state = generator.get_state().numpy().tobytes().hex()
    torch.randint(0, 2, (1,), generator=generator)
    return torch.Generator().manual_seed(keys.keyed_seed(_key(), "generator", state)).get_state()


def _integer(t: Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


#: The tensors a build reply may hold, with the dtypes each may have.
_TENSOR_KINDS = {"data_images": lambda t: t.is_floating_point(), "synthetic_images": lambda t: t.is_floating_point(),
                 "data_labels": _integer, "synthetic_labels": _integer,
                 "mask": lambda t: t.dtype == torch.bool or t.dtype == torch.uint8}


def _meta(reply: Any, did: str) -> ReleaseMeta:
    """Release metadata from a child, type-checked. A submission's ε, δ and accountant are its own statements: they
    go to ``extra`` as ``self_reported_*``, never into the fields the tables read as guarantees."""
    if not isinstance(reply, dict) or set(reply) - {"epsilon", "delta", "accountant", "bits_per_image",
                                                     "defense_seconds", "extra"}:
        raise SandboxError(f"{did}: malformed release meta")
    number = (int, float)
    extra: dict[str, Any] = {}
    raw = reply.get("extra") if isinstance(reply.get("extra"), dict) else {}
    for k, v in raw.items():
        if isinstance(k, str) and (isinstance(v, (*number, str)) and not isinstance(v, bool)):
            extra[_printable(k)[:64]] = _printable(v)[:200] if isinstance(v, str) else v
    for k in ("epsilon", "delta"):
        if isinstance(reply.get(k), number) and not isinstance(reply.get(k), bool):
            extra[f"self_reported_{k}"] = float(reply[k])
    if isinstance(reply.get("accountant"), str):
        extra["self_reported_accountant"] = _printable(reply["accountant"])[:100]
    bpi = reply.get("bits_per_image")
    return ReleaseMeta(bits_per_image=float(bpi) if isinstance(bpi, number) and not isinstance(bpi, bool) else None,
                       extra=extra)


class SandboxedDefense(Defense):
    """Base of the proxies: every call that runs the defense's code goes to a sandbox child.

    Every request (``build``, ``transform``, ``mask_generator``, ``public_info``) runs in a fresh child that
    answers it and is closed: no child carries anything from one request to the next, so only the build's child
    ever sees the private split, and the reproduction check below, an attack's query, a public run and a held-out
    run all look alike from inside (one request of the same form, seeds and generator states keyed by the run's
    secret key: :func:`keyed_seed`, :mod:`privbench.core.keys`). A transform defense's release is checked on every
    build: ``transform(private)`` under the build's release generator, in another fresh child, must reproduce it,
    so the algorithm attacks query is the one that made the release."""

    source: Path
    limits: Limits
    description: Mapping[str, Any]

    def _ask(self, op: str, header: Optional[Mapping[str, Any]], tensors: Mapping[str, Tensor],
             max_reply: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """One request in a fresh child, closed when it answers."""
        try:
            session = Session(self.source, self.limits, label=self.source.name)
            try:
                return session.request(op, {"id": self.id, "params": dataclasses.asdict(self.params),
                                            **(header or {})}, tensors, max_reply)
            finally:
                session.close()
        except SandboxError as e:
            raise SandboxError(f"defense {self.id!r}: {e}") from None

    def close(self) -> None:
        """Nothing to close: no child outlives its request."""

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        info = splits.info
        seed = keyed_seed(ctx.seed)
        header = {"seed": seed, "device": str(ctx.device), "task": dataclasses.asdict(ctx.task),
                  "info": {"name": info.name, "num_classes": info.num_classes, "shape": list(info.shape),
                           "sizes": {k: int(v) for k, v in info.sizes.items()}, "hash": "", "split_hashes": {}}}
        tensors = {**_tensors_of("private_", splits.private), **_tensors_of("aux_", splits.aux)}
        reply, t = self._ask("build", header, tensors, 4 * _nbytes(tensors) + (64 << 20))
        release = self._release(reply, t, splits)
        if Surface.TRANSFORM in self.surfaces:
            if release.data is None:
                raise SandboxError(f"defense {self.id!r}: a transform defense must release data")
            state = RunContext(seed=seed, device=ctx.device, task=ctx.task).generator("release").get_state()
            again = self._transform(splits.private.images, state)
            if again.shape != release.data.images.shape or not torch.allclose(again, release.data.images, atol=1e-5):
                raise SandboxError(
                    f"defense {self.id!r}: transform(private, ctx.generator('release')) does not reproduce the "
                    "released data, so attacks querying the public algorithm would not query what was released "
                    "(subclass privbench.defenses.base.InputDefense, or release exactly that)")
        return release

    def _release(self, reply: Mapping[str, Any], t: Mapping[str, Tensor], splits: Splits) -> Release:
        """The child's build reply as a :class:`Release`, every field checked; anything malformed (a forged
        frame included) raises :class:`SandboxError`, never another exception."""
        did = f"defense {self.id!r}"
        for key, tensor in t.items():
            kind = _TENSOR_KINDS.get(key)
            if kind is None or not kind(tensor) or tensor.ndim == 0:
                raise SandboxError(f"{did}: release field {key!r} of dtype {tensor.dtype} and shape "
                                   f"{tuple(tensor.shape)} is not allowed")
        try:
            return self._parse_release(reply, t, splits, did)
        except (IndexError, TypeError, ValueError, RuntimeError, NotImplementedError) as e:
            raise SandboxError(f"{did}: malformed release ({type(e).__name__}: {_printable(str(e))[:200]})") from None

    def _parse_release(self, reply: Mapping[str, Any], t: Mapping[str, Tensor], splits: Splits,
                       did: str) -> Release:
        data = None
        if "data_images" in t:
            if t["data_images"].shape[0] != len(splits.private) or "data_labels" not in t:
                raise SandboxError(f"{did}: released {t['data_images'].shape[0]} samples for {len(splits.private)} "
                                   "private ones (the data surface is aligned to them, with their labels)")
            if not torch.equal(t["data_labels"].long(), splits.private.labels):
                raise SandboxError(f"{did}: the data release must keep the private samples' labels")
            try:
                data = ImageSet(t["data_images"].float(), t["data_labels"].long())
            except InputError as e:
                raise SandboxError(f"{did}: released data: {e}") from None
        synthetic = None
        if "synthetic_images" in t:
            labels = t.get("synthetic_labels")
            n = splits.info.num_classes
            if labels is None or labels.ndim != 1 or (len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n)):
                raise SandboxError(f"{did}: synthetic labels must be class ids in [0, {n})")
            try:
                synthetic = ImageSet(t["synthetic_images"].float(), labels.long())
            except InputError as e:
                raise SandboxError(f"{did}: released synthetic set: {e}") from None
        mask = t.get("mask")
        if mask is not None:
            want = None if data is None else (len(data), 1, *data.images.shape[-2:])
            if want is None or tuple(mask.shape) != want:
                raise SandboxError(f"{did}: release mask of shape {tuple(mask.shape)}, expected {want} (aligned to "
                                   "the released data)")
            mask = mask.to(torch.bool)
        declared = set(self.surfaces) - {Surface.TRANSFORM}
        for s, value in ((Surface.DATA, data), (Surface.SYNTHETIC, synthetic), (Surface.MASK, mask)):
            if (value is not None) != (s in declared):
                raise SandboxError(f"{did}: declares surfaces {sorted(x.value for x in self.surfaces)} but the "
                                   f"release {'has' if value is not None else 'lacks'} {s.value}")
        public = self.transform if Surface.TRANSFORM in self.surfaces else None
        masks = self.mask_generator if Surface.MASK in self.surfaces else None
        return Release(data=data, transform=public, inference_transform=public, mask=mask, mask_generator=masks,
                       synthetic=synthetic, meta=_meta(reply.get("meta"), did))

    def release_state(self, release: Release) -> dict[str, Any]:
        state = super().release_state(release)
        if release.synthetic is not None:
            state["synthetic_images"], state["synthetic_labels"] = release.synthetic.images, release.synthetic.labels
        return state

    def restore(self, state: Mapping[str, Any], splits: Splits, ctx: RunContext) -> Release:
        release = super().restore(state, splits, ctx)
        if "synthetic_images" in state:
            release.synthetic = ImageSet(state["synthetic_images"], state["synthetic_labels"])
        return release

    def _transform(self, images: Tensor | ImageSet, state: Tensor) -> Tensor:
        x = images if isinstance(images, ImageSet) else None
        tensors = _tensors_of("", x) if x is not None else {"images": images}
        shape = tuple((x.images if x is not None else images).shape)
        reply = self._ask("transform", None, {**tensors, "generator_state": state},
                              4 * _nbytes(tensors) + (16 << 20))[1]
        out = reply.get("images")
        if out is None or out.ndim != len(shape) or out.shape[0] != shape[0] or not out.is_floating_point():
            raise SandboxError(f"defense {self.id!r}: transform of {shape} returned "
                               f"{None if out is None else (tuple(out.shape), out.dtype)}")
        try:
            ImageSet(out.float(), torch.zeros(len(out), dtype=torch.long))
        except InputError as e:
            raise SandboxError(f"defense {self.id!r}: transform output: {e}") from None
        return out.float()

    def transform(self, images: Tensor | ImageSet, generator: torch.Generator) -> Tensor:
        if Surface.TRANSFORM not in self.surfaces:
            return super().transform(images, generator)  # type: ignore[arg-type]
        return self._transform(images, _child_state(generator))

    def mask_generator(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if Surface.MASK not in self.surfaces:
            return super().mask_generator(images, generator)
        tensors = {"images": images, "generator_state": _child_state(generator)}
        mask = self._ask("mask", None, tensors, _nbytes(tensors) + (16 << 20))[1].get("mask")
        want = (len(images), 1, *images.shape[-2:])
        if mask is None or tuple(mask.shape) != want:
            raise SandboxError(f"defense {self.id!r}: mask generator returned "
                               f"{None if mask is None else tuple(mask.shape)}, expected {want}")
        return mask.to(torch.bool)

    def public_info(self, shape: tuple[int, int, int]) -> dict[str, Any]:
        info = self._ask("public_info", {"shape": list(shape)}, {}, 1 << 20)[0].get("info")
        if not isinstance(info, dict):
            raise SandboxError(f"defense {self.id!r}: public_info must be a mapping")
        return info


def proxy_classes(module: str, source: str | Path, description: Mapping[str, Any],
                  limits: Limits = Limits()) -> dict[str, type[Defense]]:
    """Proxy defense classes for a submission, keyed by Python name (to be set as attributes of ``module``, so
    their params pickle by reference), and registered under the submission's ids.

    ``description``: the defenses of the child's start-up reply, checked by :func:`validate_description`.
    """
    from privbench.core.registry import DEFENSES

    clean, problems = validate_description(dict(description))
    if problems:
        raise SandboxError("; ".join(problems))
    out: dict[str, type[Defense]] = {}
    for did, desc in clean.items():
        name = "Defense_" + did.replace("-", "_")
        fields = [(p["name"], _field_type(p["type"]),
                   dataclasses.field(default=tuple(p["default"]) if isinstance(p["default"], list) else p["default"]))
                  for p in desc["params"]]
        params_cls = dataclasses.make_dataclass("Params", fields, frozen=True)
        params_cls.__module__, params_cls.__qualname__ = module, f"{name}.Params"
        cls = type(name, (SandboxedDefense,), {
            "__module__": module, "__qualname__": name, "__doc__": desc["doc"] or f"Submitted defense {did}.",
            "Params": params_cls, "source": Path(source), "limits": limits, "description": desc,
            "surfaces": frozenset(Surface(s) for s in desc["surfaces"]),
            "claims": frozenset(ThreatModel(t) for t in desc["claims"]),
            "strength": desc["strength"],
            "modalities": frozenset(Modality(m) for m in desc["modalities"])})
        DEFENSES.register(did)(cls)
        out[name] = cls
    return out


PROXY_TEMPLATE = '''"""Generated by `privbench submit`: proxies of a submitted defense. Trusted: it imports nothing of the
submission, whose code runs only in sandbox children (privbench.submit.sandbox)."""
import json

from privbench.submit.sandbox import Limits, proxy_classes

SOURCE = {source}
SOURCE_SHA256 = {digest}
DESCRIPTION = json.loads({description})
LIMITS = Limits(**json.loads({limits}))
globals().update(proxy_classes(__name__, SOURCE, DESCRIPTION, LIMITS))
'''


def write_proxy_module(path: Path, source: Path, digest: str, description: Mapping[str, Any], limits: Limits) -> Path:
    """Write the trusted proxy module that every process of a run loads as a ``--plugin`` file. Every value is a
    ``repr`` of a string: nothing from the submission becomes source code."""
    text = PROXY_TEMPLATE.format(source=repr(str(source.resolve())), digest=repr(str(digest)),
                                 description=repr(json.dumps(description, sort_keys=True)),
                                 limits=repr(json.dumps(dataclasses.asdict(limits), sort_keys=True)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
