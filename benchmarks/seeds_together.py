"""Suite-level cost of seeds (issue 28): a small quick-like suite at 1 seed and at 5 seeds, with the seeds of each
defense configuration built together (``privbench.run.prebuild``) and without, in one run on one machine, with the
machine's yardstick and the artifact cache's hit rates per kind of artifact.

    python benchmarks/seeds_together.py [--seeds 5] [--out results/bench-seeds] [--jobs 1]

Prints a Markdown table for docs/BENCHMARKS.md: wall seconds of each run, ``5 seeds ÷ 1 seed`` (goal ≤ 2.0) and
``together ÷ one by one``, and the hit rates the runs' caches logged (``cache/access.log``).
"""

from __future__ import annotations

import argparse
import collections
import platform
import shutil
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SUITE = """
name: seeds-bench
datasets: [mnist5k]
seeds: {seeds}
splits: {{private: 1000, aux: 1000, test: 1000, targets: 200}}
task: {{model: convnet, width: 32, epochs: 6, batch_size: 64, lr: 0.003}}
defenses:
  - id: none
  - id: blur
    sweep: {{sigma: [1.0, 2.0]}}
  - id: pixelate
    params: {{block: 4}}
  - id: dp-sgd
    params: {{noise_multiplier: 1.0}}
attacks:
  - id: linkage
    params: {{epochs: 4, width: 16}}
  - id: membership
    params: {{shadows: 4}}
"""


def _run(seeds: list[int], out: Path, together: bool, jobs: int) -> float:
    from privbench.run.config import load_suite
    from privbench.run.plugins import load_builtins
    from privbench.run.runner import run_suite
    from privbench.run.worker import RunOptions

    load_builtins()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(textwrap.dedent(SUITE.format(seeds=seeds)))
    t0 = time.perf_counter()
    summary = run_suite(load_suite(path), RunOptions(out=out, jobs=jobs, progress=False, batch_seeds=together,
                                                     dp_audit_trials=2000))
    if summary.failed:
        raise SystemExit(f"{out}: {summary.failed} failed cells: {summary.failed_cells[:3]}")
    return time.perf_counter() - t0


def hit_rates(outs: list[Path]) -> dict[str, tuple[int, int]]:
    """``kind -> (hits, lookups)`` from the caches' access logs (one line ``hit|miss KIND`` per lookup)."""
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for out in outs:
        log = out / "cache" / "access.log"
        for line in log.read_text().splitlines() if log.is_file() else []:
            what, kind = line.split(" ", 1)
            counts[kind][0] += what == "hit"
            counts[kind][1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(counts.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default="results/bench-seeds")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    from ratios import reference_speed

    base = Path(args.out)
    speed = reference_speed(3)
    many = list(range(args.seeds))
    one = _run([0], base / "one", True, args.jobs)
    together = _run(many, base / "together", True, args.jobs)
    alone = _run(many, base / "alone", False, args.jobs)
    print(f"{date.today()}, {platform.processor() or platform.machine()}, {args.jobs} job(s); {speed}\n")
    print(f"| run | wall (s) |\n|---|---:|\n| 1 seed | {one:.0f} |\n| {args.seeds} seeds, together | {together:.0f} |"
          f"\n| {args.seeds} seeds, one by one | {alone:.0f} |\n")
    print(f"{args.seeds} seeds ÷ 1 seed: {together / one:.2f} (goal ≤ 2.0); together ÷ one by one: "
          f"{together / alone:.2f}\n")
    print("| cache entries | hits / lookups (together, one by one) |\n|---|---|")
    rates = {"together": hit_rates([base / "together"]), "alone": hit_rates([base / "alone"])}
    for kind in sorted(set(rates["together"]) | set(rates["alone"])):
        cells = [f"{h}/{n} ({h / n:.0%})" if n else "-" for h, n in
                 (rates[r].get(kind, (0, 0)) for r in ("together", "alone"))]
        print(f"| {kind} | {cells[0]}, {cells[1]} |")
    print(f"\ncommand: python benchmarks/seeds_together.py --seeds {args.seeds} --jobs {args.jobs}")


if __name__ == "__main__":
    main()
