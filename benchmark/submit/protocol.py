"""The sandbox's wire protocol (docs/SUBMITTING.md): length-framed JSON headers plus tensors in the safetensors
format, over two pipes that are not the child's stdout/stderr. Nothing is ever unpickled: a malformed frame is an
error, not a code path. Also the limits of one child and the error every sandbox failure raises."""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from torch import Tensor

from privbench.core.errors import InputError
from privbench.core.images import Surface

#: Surfaces a sandboxed defense may expose: plain tensors cross the process boundary; modules do not.
SANDBOX_SURFACES = frozenset({Surface.DATA, Surface.TRANSFORM, Surface.MASK, Surface.SYNTHETIC})
#: Params field types a sandboxed defense may declare (YAML scalars, optional or in tuples).
SCALAR_TYPES = {"bool": bool, "int": int, "float": float, "str": str}
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
