"""Cost: wall seconds and peak resident memory."""

from __future__ import annotations

import resource
import sys
import time
from types import TracebackType
from typing import Optional


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``getrusage``; bytes on macOS, KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


class CostMeter:
    """``with CostMeter() as c: ...`` then ``c.seconds`` and ``c.peak_rss_mb`` (process peak at exit)."""

    def __enter__(self) -> "CostMeter":
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        self.peak_rss_mb = 0.0
        return self

    def __exit__(self, et: Optional[type], ev: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.peak_rss_mb = peak_rss_mb()
