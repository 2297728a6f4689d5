"""Parallel efficiency of the local executor: the same suite cold with ``--jobs 1`` and ``--jobs N`` (issue 15).

    python benchmarks/scaling.py [--suite quick] [--seeds 0] [--jobs 2] [--pairs 1]

Each pair runs the suite cold (fresh output directory, so nothing is reused) with one worker, then with ``N``
workers, alternately, so a drift in the machine's speed hits both. Efficiency is ``T1 / (N · TN)``, the median over
pairs: 1 when N workers finish N times sooner. Goal ≥ 0.8 for N = 2 on the quick suite. Both runs split the same
cores among their workers' torch threads (``--jobs 1`` gives its one worker all of them), so the ratio measures how
well cells spread over processes, against torch's own intra-op threading.
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


def _cold(suite: str, seeds: list[str], jobs: int) -> float:
    out = Path(tempfile.mkdtemp(prefix=f"privbench-scaling-j{jobs}-"))
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "benchmark", "run", "--suite", suite, "--out", str(out / "run"),
                        "--jobs", str(jobs), "--seeds", *seeds, "--no-progress", "--no-report"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--seeds", nargs="+", default=["0"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=1)
    args = parser.parse_args()

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; "
          f"{date.today()}; suite {args.suite}, seeds {' '.join(args.seeds)}", flush=True)
    effs = []
    for i in range(args.pairs):
        t1 = _cold(args.suite, args.seeds, 1)
        tn = _cold(args.suite, args.seeds, args.jobs)
        effs.append(t1 / (args.jobs * tn))
        print(f"pair {i + 1}: --jobs 1 {t1:.0f} s, --jobs {args.jobs} {tn:.0f} s, speed-up {t1 / tn:.2f}, "
              f"efficiency {effs[-1]:.2f}", flush=True)
    print(f"efficiency T1 / ({args.jobs}·T{args.jobs}), median of {len(effs)}: **{statistics.median(effs):.2f}** "
          "(goal ≥ 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
