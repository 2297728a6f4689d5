"""The run key of a submission run: what keeps seeds, splits and targets underivable inside a sandbox child.

A submission's child sees private images. If the split were a public function of the seed (as in ordinary runs, so
that every board reproduces anywhere), a child holding a copy of the public dataset could match its images to
dataset indices, invert the seed, and so learn which images are attack targets, or whether it is in a public or a
held-out run. In a submission run everything a child could use is keyed by a secret **run key** held on the trusted
side: the splits and targets (:func:`keyed_seed` with domain ``"splits"``), the seed a child is given and the states
of the generators it is handed. Maintainers keep the key (``OUT/.sandbox-key``, or ``--sandbox-key FILE``) to
reproduce the public seeds; a child never reads it (it lies outside everything a child may read).

The key reaches the trusted worker processes through :data:`KEY_ENV` (children get a scrubbed environment).
Ordinary runs have no key: :func:`run_key` is ``None`` and nothing changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Optional

from privbench.core.errors import InputError

#: Environment variable holding the run key (hex) for this process and the trusted workers it starts.
KEY_ENV = "PRIVBENCH_SANDBOX_KEY"


def run_key() -> Optional[bytes]:
    """The current run's key, or ``None`` outside a submission run."""
    text = os.environ.get(KEY_ENV)
    if not text:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InputError(f"{KEY_ENV}: expected a hex key") from None


def keyed_seed(key: bytes, *parts: Any) -> int:
    """A 63-bit seed from ``parts`` under ``key`` (HMAC-SHA256 of their canonical JSON): unpredictable without
    the key, reproducible with it."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return int.from_bytes(hmac.new(key, blob, "sha256").digest()[:8], "big") >> 1


def subkey(key: bytes, purpose: str, data: bytes = b"") -> bytes:
    """A key for one purpose (``"public"``, ``"heldout"``) derived from the run key."""
    return hmac.new(key, purpose.encode() + b"\0" + hashlib.sha256(data).digest(), "sha256").digest()


def load_or_create(path: Path) -> bytes:
    """The run key stored at ``path`` (32 random bytes, hex; created with mode 0600 when missing)."""
    path = Path(path)
    if path.exists():
        text = path.read_text().strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise InputError(f"sandbox key {path}: expected 64 hex digits") from None
        if len(key) < 16:
            raise InputError(f"sandbox key {path}: at least 16 bytes (32 hex digits) are needed")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key
