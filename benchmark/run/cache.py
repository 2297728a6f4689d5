"""Content-addressed artifact cache (releases, utility results, splits) stored as torch files.

Entries are dicts of tensors and plain values, saved atomically and loaded with ``weights_only=True``. The key is a
hash of everything that determines the artifact (config, code, data hash, seed), so an edit invalidates it.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import re
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from privbench.core.atomic import atomic_path


def code_hash(*objs: object) -> str:
    """SHA-256 over the source files defining ``objs`` (classes, functions or modules)."""
    h = hashlib.sha256()
    for obj in objs:
        path = inspect.getsourcefile(obj)  # type: ignore[arg-type]
        h.update(Path(path).read_bytes() if path else repr(obj).encode())
    return h.hexdigest()


class ArtifactCache:
    """``get_or_create(key, fn)``: load ``root/<key>.pt`` or compute ``fn()`` and store it atomically."""

    def __init__(self, root: Optional[Path]) -> None:
        self.root = Path(root) if root is not None else None

    def path(self, key: str) -> Optional[Path]:
        return None if self.root is None else self.root / f"{key}.pt"

    def get(self, key: str) -> Optional[dict[str, Any]]:
        p = self.path(key)
        if p is None:
            return None
        value = None
        if p.is_file():
            try:
                # memory-mapped: the processes of a run that read one entry (its workers read every split) share
                # its pages instead of holding a copy each; writes to a loaded tensor are copy-on-write
                value = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except (RuntimeError, EOFError, OSError):
                value = None  # unreadable entry (e.g. disk full mid-write elsewhere): recompute and overwrite
        self._log("hit" if value is not None else "miss", key)
        return value

    def _log(self, what: str, key: str) -> None:
        """One line ``hit|miss KIND`` per lookup in ``root/access.log`` (appended whole by every process that shares
        the cache; ``benchmarks/seeds_together.py`` prints the hit rates). KIND: the key up to its first hash."""
        assert self.root is not None
        parts = key.split("-")
        kind = "-".join(itertools.takewhile(lambda x: not re.fullmatch(r"[0-9a-f]{16,}", x), parts)) or "other"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / "access.log", "a", encoding="utf-8") as f:
                f.write(f"{what} {kind}\n")
        except OSError:
            pass  # the log is a statistic, never a reason to fail a cell

    def put(self, key: str, value: dict[str, Any]) -> None:
        p = self.path(key)
        if p is None:
            return
        with atomic_path(p) as tmp:
            torch.save(value, tmp)

    def get_or_create(self, key: str, fn: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Returns ``(value, was_cached)``."""
        hit = self.get(key)
        if hit is not None:
            return hit, True
        value = fn()
        self.put(key, value)
        return value, False
