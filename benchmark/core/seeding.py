"""Explicit randomness: seeds derived by hashing, generators passed around, no global seeding.

Every random stream of a cell is ``derive_seed(cell_seed, domain, ...)``: a one-way SHA-256 derivation, so a stream
handed to an attack (domain ``"attack"``) reveals nothing about a defense's secret stream (``"defense-secret"``).
Code that must draw from torch's global generator (module constructors initialise their weights there) runs under
:func:`seeded`, which forks the global state, seeds it from a passed generator and restores it on exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any, Iterator

import torch


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (ints, strings, lists of them), by SHA-256 of their canonical JSON."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


@contextlib.contextmanager
def seeded(generator: torch.Generator) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded from ``generator`` (one draw), then restore it.

    ``with seeded(ctx.generator("init")): net = UNetDecoder(...)`` gives reproducible initial weights without
    touching anyone else's randomness.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def set_deterministic() -> dict[str, Any]:
    """The determinism settings that cost little on CPU (and keep CUDA runs repeatable); returns what was set.

    Called once per process by the runner (never at import time).
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return deterministic_settings()


def deterministic_settings() -> dict[str, Any]:
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic)}
