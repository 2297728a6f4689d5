"""Sandboxed third-party defenses: submitted code runs only in a limited child process (docs/SUBMITTING.md).

The trusted side (driver, pool workers, attack processes) never imports a submission. It registers *proxy*
defenses (:func:`proxy_classes`) whose ``build`` / ``transform`` / ``mask_generator`` / ``public_info`` forward to
a :class:`Session`: a child Python process that imported the submission and nothing else of the run.

The child is limited before it runs any submitted line:
    - address space (``RLIMIT_AS``), CPU seconds (``RLIMIT_CPU``), largest written file (``RLIMIT_FSIZE``), no core
      dumps, a scrubbed environment, its own session (killed as a group) and a fresh temporary working directory;
    - file-system writes confined to that directory by Landlock (Linux >= 5.13) when the kernel has it; reads stay
      allowed (Python, torch and the submission must load). :func:`filesystem_isolation` says which applies;
    - every request has a wall-time limit; past it the child's process group is killed.

Requests and replies are length-framed JSON headers plus tensors in the safetensors format, over two pipes that
are not the child's stdout/stderr (what the submission prints goes to a log whose tail is quoted in errors).
Nothing is ever unpickled: a malformed reply is an error, not a code path.
"""

from __future__ import annotations

import dataclasses
import json
import os
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from .contracts import (DatasetInfo, Defense, ImageSet, Modality, Release, ReleaseMeta, RunContext, Splits, Surface,
                        TaskConfig)
from .errors import InputError
from .threats import ThreatModel

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

    def __post_init__(self) -> None:
        if not (self.wall_seconds > 0 and self.startup_seconds > 0 and self.cpu_seconds > 0 and self.memory_bytes > 0 and self.file_bytes >= 0
                and self.threads >= 1):
            raise InputError(f"sandbox limits must be positive, got {self}")


def filesystem_isolation() -> Optional[str]:
    """``None`` when Landlock can confine the child's writes here, else why not (the child then relies on the
    resource limits and its scrubbed environment alone; the submission's record says so)."""
    if not sys.platform.startswith("linux"):
        return f"Landlock is Linux-only (platform {sys.platform})"
    try:
        from landlock.plumbing import landlock_abi_version
    except ImportError:
        return "the 'landlock' package is not installed"
    try:
        abi = landlock_abi_version()
    except Exception as e:  # noqa: BLE001 - any failure means: not available
        return f"Landlock is unavailable in this kernel ({type(e).__name__}: {e})"
    return None if abi >= 1 else f"Landlock ABI {abi}"


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


def decode(head: bytes, body: bytes) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Parse a frame; anything but a JSON object and a safetensors payload raises :class:`SandboxError`."""
    from safetensors.torch import load

    try:
        header = json.loads(head.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SandboxError(f"malformed reply header ({e}); replies are JSON + safetensors, never pickles") from None
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


def write_frame(fd: int, frame: bytes) -> None:
    view = memoryview(frame)
    while view:
        view = view[os.write(fd, view):]


# ---------------------------------------------------------------------------------------------------------------
# The trusted side: a session with one child.


def _limit_child(limits: Limits) -> None:
    """``preexec_fn``: runs in the forked child before ``exec``: own session, resource limits."""
    import resource

    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


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

    def __init__(self, source: str | Path, limits: Limits = Limits(), max_reply_bytes: int = 8 << 30) -> None:
        self.source, self.limits, self.max_reply_bytes = Path(source).resolve(), limits, max_reply_bytes
        self._lock = threading.Lock()
        self.workdir = Path(tempfile.mkdtemp(prefix="privbench-sandbox-"))
        self.log = self.workdir / "child.log"
        c_read, p_write = os.pipe()  # requests: parent -> child
        p_read, c_write = os.pipe()  # replies: child -> parent
        root = str(Path(__file__).resolve().parent.parent)
        code = (f"import sys; sys.path.insert(0, {root!r}); from benchmark.sandbox import child_main; "
                f"child_main({c_read}, {c_write}, {str(self.source)!r}, {limits.threads})")
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen([sys.executable, "-I", "-c", code], cwd=self.workdir, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, pass_fds=(c_read, c_write),
                                          env=_scrubbed_env(self.workdir, limits.threads),
                                          preexec_fn=lambda: _limit_child(limits))
        os.close(c_read)
        os.close(c_write)
        self._write, self._read = p_write, p_read
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, p_write, p_read, self.workdir)
        self.hello = self._reply("start-up", time.monotonic() + limits.startup_seconds)[0]

    def request(self, op: str, header: Optional[Mapping[str, Any]] = None,
                tensors: Optional[Mapping[str, Tensor]] = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
        with self._lock:
            if not self._finalizer.alive:
                raise SandboxError(f"{self.source.name}: the sandbox was already closed")
            try:
                write_frame(self._write, encode({"op": op, **(header or {})}, tensors))
            except (BrokenPipeError, OSError) as e:
                raise self._fail(op, f"the child is gone ({type(e).__name__})") from None
            return self._reply(op, time.monotonic() + self.limits.wall_seconds)

    def _reply(self, op: str, deadline: float) -> tuple[dict[str, Any], dict[str, Tensor]]:
        try:
            header, tensors = read_frame(self._read, deadline, self.max_reply_bytes)
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
            raise SandboxError(f"{self.source.name}: {op} raised {error}")
        return header, tensors

    def _death(self) -> str:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the child closed its reply pipe"
        if code < 0:
            sig = signal.Signals(-code).name
            why = {"SIGXCPU": f"exceeded the CPU-time limit of {self.limits.cpu_seconds} s",
                   "SIGKILL": "was killed (e.g. out of memory)", "SIGXFSZ": "exceeded the file-size limit "
                   f"of {self.limits.file_bytes} bytes", "SIGSEGV": "crashed (segmentation fault)"}.get(sig, sig)
            return f"the child {why}"
        return f"the child exited with status {code}"

    def _fail(self, op: str, cause: str) -> SandboxError:
        tail = self.tail()
        self.close()
        return SandboxError(f"{self.source.name}: {op}: {cause}" + (f"; its output ends with:\n{tail}" if tail else ""))

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def close(self) -> None:
        self._finalizer()


def _shutdown(proc: subprocess.Popen, write: int, read: int, workdir: Path) -> None:
    for fd in (write, read):
        try:
            os.close(fd)
        except OSError:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# The child.

_WRITE = ("WRITE_FILE", "TRUNCATE", "REMOVE_DIR", "REMOVE_FILE", "MAKE_CHAR", "MAKE_DIR", "MAKE_REG", "MAKE_SOCK",
          "MAKE_FIFO", "MAKE_BLOCK", "MAKE_SYM", "REFER")


def _confine_writes(workdir: str) -> bool:
    """Landlock: from now on this process writes only beneath ``workdir`` (and to /dev/null)."""
    if filesystem_isolation() is not None:
        return False
    from landlock import FSAccess, Ruleset

    rights = FSAccess(0)
    for name in _WRITE:
        rights |= FSAccess[name]
    rules = Ruleset(restrict_rules=rights)
    rules.allow(workdir)
    rules.allow("/dev/null", rules=FSAccess.WRITE_FILE | FSAccess.TRUNCATE)
    rules.apply()
    return True


def _import_source(path: Path) -> None:
    """Import a submission: a ``.py`` file or a package directory (its ``__init__.py`` registers the defenses).
    Its exceptions propagate as they are (the registry's ``KeyError`` for a taken id included)."""
    import importlib.util

    if path.is_file():
        init, search = path, None
    elif (path / "__init__.py").is_file():
        init, search = path / "__init__.py", [str(path)]
    else:
        raise InputError(f"{path}: expected a Python file or a package directory with __init__.py")
    name = f"privbench_submission_{path.stem.replace('-', '_')}"
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
    """What the trusted side needs to register a proxy of ``cls``, plus the admission problems found."""
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
            try:
                json.dumps(default, allow_nan=False)
            except (TypeError, ValueError):
                problems.append(f"Params.{f.name}: default {default!r} is not a plain value")
                continue
            params.append({"name": f.name, "type": tname,
                           "default": list(default) if isinstance(default, tuple) else default})
    surfaces = getattr(cls, "surfaces", None)
    if not surfaces:
        problems.append("no surfaces declared (set the class attribute `surfaces`)")
        surfaces = frozenset()
    extra = sorted(s.value for s in surfaces if s not in SANDBOX_SURFACES)
    if extra:
        problems.append(f"surfaces {', '.join(extra)} cannot leave the sandbox (allowed: "
                        f"{', '.join(sorted(s.value for s in SANDBOX_SURFACES))})")
    return {"doc": cls.describe(), "surfaces": sorted(s.value for s in surfaces),
            "claims": sorted(t.value for t in getattr(cls, "claims", frozenset())),
            "strength": getattr(cls, "strength", None),
            "modalities": sorted(m.value for m in getattr(cls, "modalities", frozenset({Modality.IMAGE}))),
            "params": params, "problems": problems}


def _imageset(tensors: Mapping[str, Tensor], prefix: str) -> ImageSet:
    return ImageSet(tensors[f"{prefix}images"], tensors[f"{prefix}labels"],
                    *(tensors.get(f"{prefix}{k}") for k in ("identities", "masks", "keypoints")))


def _release_reply(release: Any) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if not isinstance(release, Release):
        raise TypeError(f"build returned {type(release).__name__}, expected benchmark.contracts.Release")
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
        tensors["mask"] = release.mask.to(torch.bool)
    if release.synthetic is not None:
        tensors["synthetic_images"], tensors["synthetic_labels"] = release.synthetic.images, release.synthetic.labels
    for k, v in tensors.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"release field {k} must be a torch.Tensor, got {type(v).__name__}")
    return {"ok": True, "meta": meta}, tensors


def _generator(tensors: Mapping[str, Tensor]) -> torch.Generator:
    g = torch.Generator()
    g.set_state(tensors["generator_state"])
    return g


def child_main(read_fd: int, write_fd: int, source: str, threads: int) -> None:
    """The sandbox child: confine writes, import the built-ins and then the submission, answer requests."""
    from .isolation import exit_with_parent
    from .registry import DEFENSES, load_builtins
    from .seeding import set_deterministic

    sys.dont_write_bytecode = True
    exit_with_parent()
    torch.set_num_threads(threads)
    set_deterministic()
    confined = _confine_writes(os.getcwd())

    def send(header: Mapping[str, Any], tensors: Optional[Mapping[str, Tensor]] = None) -> None:
        write_frame(write_fd, encode(header, tensors))

    def error(e: BaseException) -> dict[str, Any]:
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                      if not f.filename.startswith(str(Path(__file__).parent))), "")
        return {"ok": False, "error": f"{type(e).__name__}: {e}" + (f" (at {where})" if where else "")}

    load_builtins()
    builtin = set(DEFENSES)
    try:
        _import_source(Path(source))
    except KeyError as e:  # the registry's duplicate-id error: a submission may not shadow a registered id
        send({"ok": False, "fatal": True, "error": f"registers an id that is already taken: {e.args[0]}"})
        return
    except BaseException as e:  # noqa: BLE001 - report any import failure as data
        send({**error(e), "fatal": True, "error": f"import failed: {error(e)['error']}"})
        return
    new = sorted(set(DEFENSES) - builtin)
    send({"ok": True, "defenses": {i: _describe(DEFENSES.get(i)) for i in new}, "confined": confined,
          "python": sys.version.split()[0], "torch": torch.__version__})
    instances: dict[str, Defense] = {}
    while True:
        try:
            header, tensors = read_frame(read_fd, None, 1 << 40)
        except EOFError:
            return
        try:
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


def _advance(generator: torch.Generator, reply: Mapping[str, Tensor]) -> None:
    """Leave the caller's generator where the child's ended, as if the call had run in this process."""
    state = reply.get("generator_state")
    if state is None or state.dtype != torch.uint8 or state.shape != generator.get_state().shape:
        raise SandboxError("the child returned no valid generator state")
    generator.set_state(state)


class SandboxedDefense(Defense):
    """Base of the proxies: every call that runs the defense's code goes to a sandbox child."""

    source: Path
    limits: Limits
    description: Mapping[str, Any]

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._session: Optional[Session] = None

    def _call(self, op: str, header: Optional[Mapping[str, Any]] = None,
              tensors: Optional[Mapping[str, Tensor]] = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
        if self._session is None:
            self._session = Session(self.source, self.limits)
        return self._session.request(op, {"id": self.id, "params": dataclasses.asdict(self.params),
                                          **(header or {})}, tensors)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __getstate__(self) -> dict[str, Any]:
        return {"params": self.params}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.params, self._session = state["params"], None

    def build(self, splits: Splits, ctx: RunContext) -> Release:
        info = splits.info
        header = {"seed": ctx.seed, "device": str(ctx.device), "task": dataclasses.asdict(ctx.task),
                  "info": {"name": info.name, "num_classes": info.num_classes, "shape": list(info.shape),
                           "sizes": dict(info.sizes), "hash": info.hash, "split_hashes": dict(info.split_hashes)}}
        reply, t = self._call("build", header, {**_tensors_of("private_", splits.private),
                                                **_tensors_of("aux_", splits.aux)})
        data = None
        if "data_images" in t:
            if t["data_images"].shape[0] != len(splits.private):
                raise SandboxError(f"{self.id}: released {t['data_images'].shape[0]} samples for "
                                   f"{len(splits.private)} private ones (the data surface is aligned to them)")
            try:
                data = ImageSet(t["data_images"].float(), t["data_labels"].long())
            except InputError as e:
                raise SandboxError(f"{self.id}: released data: {e}") from None
        synthetic = None
        if "synthetic_images" in t:
            try:
                synthetic = ImageSet(t["synthetic_images"].float(), t["synthetic_labels"].long())
            except InputError as e:
                raise SandboxError(f"{self.id}: released synthetic set: {e}") from None
        mask = t.get("mask")
        if mask is not None and (data is None or mask.shape[0] != len(data) or mask.shape[-3] != 1):
            raise SandboxError(f"{self.id}: release mask of shape {tuple(mask.shape)} is not (N, 1, H, W) "
                               "aligned to the released data")
        meta = dict(reply["meta"])
        extra = meta.pop("extra", {}) or {}
        try:
            meta_obj = ReleaseMeta(**meta, extra=extra)
        except TypeError as e:
            raise SandboxError(f"{self.id}: release meta: {e}") from None
        public = self.transform if Surface.TRANSFORM in self.surfaces else None
        masks = self.mask_generator if Surface.MASK in self.surfaces else None
        return Release(data=data, transform=public, inference_transform=public, mask=mask, mask_generator=masks,
                       synthetic=synthetic, meta=meta_obj)

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

    def transform(self, images: Tensor | ImageSet, generator: torch.Generator) -> Tensor:
        if Surface.TRANSFORM not in self.surfaces:
            return super().transform(images, generator)  # type: ignore[arg-type]
        x = images if isinstance(images, ImageSet) else None
        tensors = _tensors_of("", x) if x is not None else {"images": images}
        shape = tuple((x.images if x is not None else images).shape)
        reply = self._call("transform", None, {**tensors, "generator_state": generator.get_state()})[1]
        _advance(generator, reply)
        out = reply.get("images")
        if out is None or tuple(out.shape[:1]) != shape[:1] or out.ndim != len(shape):
            raise SandboxError(f"{self.id}: transform of {shape} returned "
                               f"{None if out is None else tuple(out.shape)}")
        try:
            ImageSet(out.float(), torch.zeros(len(out), dtype=torch.long))
        except InputError as e:
            raise SandboxError(f"{self.id}: transform output: {e}") from None
        return out.float()

    def mask_generator(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if Surface.MASK not in self.surfaces:
            return super().mask_generator(images, generator)
        reply = self._call("mask", None, {"images": images, "generator_state": generator.get_state()})[1]
        _advance(generator, reply)
        mask = reply.get("mask")
        if mask is None or tuple(mask.shape) != (len(images), 1, *images.shape[-2:]):
            raise SandboxError(f"{self.id}: mask generator returned {None if mask is None else tuple(mask.shape)}, "
                               f"expected {(len(images), 1, *images.shape[-2:])}")
        return mask

    def public_info(self, shape: tuple[int, int, int]) -> dict[str, Any]:
        return dict(self._call("public_info", {"shape": list(shape)})[0].get("info") or {})


def proxy_classes(module: str, source: str | Path, description: Mapping[str, Any],
                  limits: Limits = Limits()) -> dict[str, type[Defense]]:
    """Proxy defense classes for a submission, keyed by Python name (to be set as attributes of ``module``, so
    their params pickle by reference), and registered under the submission's ids.

    ``description``: the ``defenses`` part of the child's start-up reply (see :func:`_describe`).
    """
    from .registry import DEFENSES

    out: dict[str, type[Defense]] = {}
    for did, desc in sorted(description.items()):
        name = "Defense_" + did.replace("-", "_")
        fields = [(p["name"], _field_type(p["type"]),
                   dataclasses.field(default=tuple(p["default"]) if isinstance(p["default"], list) else p["default"]))
                  for p in desc["params"]]
        params_cls = dataclasses.make_dataclass("Params", fields, frozen=True)
        params_cls.__module__, params_cls.__qualname__ = module, f"{name}.Params"
        cls = type(name, (SandboxedDefense,), {
            "__module__": module, "__qualname__": name, "__doc__": desc.get("doc") or f"Submitted defense {did}.",
            "Params": params_cls, "source": Path(source), "limits": limits, "description": desc,
            "surfaces": frozenset(Surface(s) for s in desc["surfaces"]),
            "claims": frozenset(ThreatModel(t) for t in desc["claims"]),
            "strength": desc.get("strength"),
            "modalities": frozenset(Modality(m) for m in desc["modalities"])})
        DEFENSES.register(did)(cls)
        out[name] = cls
    return out


PROXY_TEMPLATE = '''"""Generated by `privbench submit`: proxies of the defenses in {source}.

Submitted source SHA-256 {digest}. The submitted code runs only in sandbox children (benchmark.sandbox); this
file is trusted and imports nothing of it.
"""
import json

from benchmark.sandbox import Limits, proxy_classes

SOURCE = {source!r}
SOURCE_SHA256 = {digest!r}
DESCRIPTION = json.loads({description!r})
LIMITS = Limits(**json.loads({limits!r}))
globals().update(proxy_classes(__name__, SOURCE, DESCRIPTION, LIMITS))
'''


def write_proxy_module(path: Path, source: Path, digest: str, description: Mapping[str, Any], limits: Limits) -> Path:
    """Write the trusted proxy module that every process of a run loads as a ``--plugin`` file."""
    text = PROXY_TEMPLATE.format(source=str(source.resolve()), digest=digest,
                                 description=json.dumps(description, sort_keys=True),
                                 limits=json.dumps(dataclasses.asdict(limits), sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def describe_source(source: Path, limits: Limits = Limits()) -> dict[str, Any]:
    """Start a child on ``source`` and return its start-up reply (the defenses it registered, and more)."""
    session = Session(source, limits)
    try:
        return session.hello
    finally:
        session.close()
