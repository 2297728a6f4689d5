"""Time the quick suite, a cached re-run and `privbench report`; print a Markdown row for docs/BENCHMARKS.md.

Usage: python benchmarks/time_quick.py [--out DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path


def _timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the child processes of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench-quick")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    run = [sys.executable, "-m", "benchmark", "run", "--suite", "quick", "--out", str(out), "--jobs", str(args.jobs),
           "--no-progress"]
    cold, rss = _timed(run)
    cached, _ = _timed(run)
    report, _ = _timed([sys.executable, "-m", "benchmark", "report", str(out)])
    machine = f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}"
    print("| date | machine | quick suite (s) | peak RSS (MiB) | cached re-run (s) | report (s) |")
    print("|---|---|---|---|---|---|")
    print(f"| {date.today()} | {machine} | {cold:.0f} | {rss:.0f} | {cached:.1f} | {report:.1f} |")
    print(f"\ncommand: python benchmarks/time_quick.py --jobs {args.jobs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
