"""Parallel efficiency of the local executor: the same suite cold with ``--jobs 1`` and ``--jobs N`` (issue 15).

    python benchmarks/scaling.py [--suite quick] [--seeds 0] [--jobs 2] [--pairs 1] [--no-threaded]

Each round runs the suite cold (fresh output directory, so nothing is reused) three ways, one after the other, so a
drift in the machine's speed hits all of them:

- ``--jobs 1`` with one torch thread (``OMP_NUM_THREADS=1``): the serial reference, one worker on one core;
- ``--jobs N``: N workers, one torch thread each (the runner splits the cores among its workers);
- ``--jobs 1`` with torch's default threads (all cores in one process; skipped with ``--no-threaded``).

Parallel efficiency is ``T1 / (N · TN)`` against the one-core reference, the median over rounds: 1 when N workers on
N cores finish N times sooner than one worker on one core. Goal ≥ 0.8 for N = 2 on the quick suite. The third run
answers the user's question, "is ``--jobs N`` faster than letting torch thread one process?", as the speed-up
``T1(threaded) / TN``; both of those use every core, so that ratio is not an efficiency.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cold(suite: str, seeds: list[str], jobs: int, threads: int | None = None) -> float:
    """Wall seconds of one cold run; ``threads`` caps torch's threads through the environment (None: default)."""
    out = Path(tempfile.mkdtemp(prefix=f"privbench-scaling-j{jobs}-"))
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "benchmark", "run", "--suite", suite, "--out", str(out / "run"),
                        "--jobs", str(jobs), "--seeds", *seeds, "--no-progress", "--no-report"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--seeds", nargs="+", default=["0"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=1, help="rounds (each runs every configuration once)")
    parser.add_argument("--no-threaded", action="store_true", help="skip --jobs 1 with torch's default threads")
    args = parser.parse_args()

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; "
          f"{date.today()}; suite {args.suite}, seeds {' '.join(args.seeds)}", flush=True)
    n = args.jobs
    effs, speedups = [], []
    for i in range(args.pairs):
        t1 = _cold(args.suite, args.seeds, 1, threads=1)
        tn = _cold(args.suite, args.seeds, n)
        effs.append(t1 / (n * tn))
        line = (f"round {i + 1}: --jobs 1 on one thread {t1:.0f} s, --jobs {n} {tn:.0f} s, "
                f"speed-up {t1 / tn:.2f}, efficiency {effs[-1]:.2f}")
        if not args.no_threaded:
            tt = _cold(args.suite, args.seeds, 1)
            speedups.append(tt / tn)
            line += f"; --jobs 1 threaded {tt:.0f} s, --jobs {n} is {speedups[-1]:.2f}x faster"
        print(line, flush=True)
    print(f"parallel efficiency T1 / ({n}·T{n}), median of {len(effs)}: **{statistics.median(effs):.2f}** "
          "(goal ≥ 0.8)")
    if speedups:
        print(f"--jobs {n} against --jobs 1 with torch's own threads, median speed-up: "
              f"**{statistics.median(speedups):.2f}**")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
