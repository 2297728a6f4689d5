"""Content hashes: canonical JSON of plain data and the exact bytes of tensors (cell keys, cache keys, data ids)."""

from __future__ import annotations

import hashlib
import json
import typing
from typing import Any

if typing.TYPE_CHECKING:
    import torch


def stable_hash(obj: Any) -> str:
    """SHA-256 (hex) of a canonical JSON encoding of ``obj`` (sorted keys, no whitespace, ``str`` for the rest)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def tensor_hash(*tensors: torch.Tensor) -> str:
    """Exact content hash (hex) of tensors: dtype, shape and bytes of each, in order."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
