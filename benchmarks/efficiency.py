"""Quick-suite efficiency: the share of its CPU time spent in forward/backward passes (issue 15).

    python benchmarks/efficiency.py [--suite quick] [--seeds 0] [--jobs 2] [--out DIR] [--py-spy]

Runs ``privbench run`` cold in a fresh output directory with process-wide timers (``benchmarks/efficiency_hook.py``,
installed by a generated ``sitecustomize`` in every process, project code untouched) and prints:

- total CPU seconds of all processes (``getrusage(RUSAGE_CHILDREN)``) and wall time;
- the **efficiency**: CPU seconds in forward passes with autograd on, backward passes and optimizer steps (the
  training and attack-optimisation work the suite cannot avoid) ÷ total CPU. Goal ≥ 0.75;
- the rest by cause: forward passes without autograd (evaluation, metrics, attack inference), process start-up up to
  the first forward pass (interpreter, imports, data preparation), and everything else;
- with ``--py-spy``: the same run is sampled by py-spy (``pip install py-spy``) and every non-torch sample is
  attributed to the innermost privbench/library module it was in, which names the "everything else".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ESSENTIAL = ("forward_grad", "backward", "optimizer_step")

SITECUSTOMIZE = """\
import os, sys
if os.environ.get("PRIVBENCH_EFFICIENCY_DIR"):
    sys.path.insert(0, {bench!r})
    from pathlib import Path
    import efficiency_hook
    efficiency_hook.install(Path(os.environ["PRIVBENCH_EFFICIENCY_DIR"]))
    sys.path.remove({bench!r})
"""


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _causes(raw: Path, top: int = 20) -> list[tuple[str, float]]:
    """Share of py-spy samples by cause: torch work, or else the innermost project/library module on the stack."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        if any("torch/autograd" in f or "torch/optim" in f for f in frames):
            cause = "torch: backward / optimizer"
        elif any("_call_impl" in f for f in frames):
            cause = "torch: module forward"
        elif any("_find_and_load" in f for f in frames):
            cause = "imports"
        else:
            cause = "other"
            for frame in reversed(frames):
                if "(" not in frame:
                    continue
                path = frame[frame.rfind("(") + 1:].split(":")[0]
                for marker in ("/benchmark/", "/attacks/", "/defenses/"):
                    if marker in path:
                        cause = path[path.rfind(marker) + 1:]
                        break
                else:
                    if "site-packages/" in path:
                        cause = path.split("site-packages/")[1].split("/")[0]
                    elif "multiprocessing" in path or "threading" in path:
                        cause = "multiprocessing / threads"
                    else:
                        continue
                break
        counts[cause] += int(n)
    total = sum(counts.values()) or 1
    return [(cause, n / total) for cause, n in counts.most_common(top)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--seeds", nargs="+", default=["0"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, help="run directory (default: a temporary one, removed)")
    parser.add_argument("--py-spy", action="store_true", help="also sample the run with py-spy for causes")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="privbench-eff-"))
    out = args.out or work / "run"
    if out.exists():
        raise SystemExit(f"{out} exists: the efficiency run must start cold")
    timers, site = work / "timers", work / "site"
    timers.mkdir(), site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(bench=str(ROOT / "benchmarks")))
    env = {**os.environ, "PRIVBENCH_EFFICIENCY_DIR": str(timers),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "benchmark", "run", "--suite", args.suite, "--out", str(out),
           "--jobs", str(args.jobs), "--seeds", *args.seeds, "--no-progress", "--no-report"]
    raw = work / "py-spy.txt"
    if args.py_spy:
        if shutil.which("py-spy") is None:
            raise SystemExit("--py-spy needs py-spy: pip install py-spy")
        # full file names: py-spy shortens them to the package part by default, which hides the markers below
        cmd = ["py-spy", "record", "--subprocesses", "--format", "raw", "--rate", "20", "--nonblocking",
               "--full-filenames", "-o", str(raw), "--", *cmd]
    cpu0, t0 = _cpu_children(), time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - cpu0

    procs = [json.loads(p.read_text()) for p in timers.glob("*.json")]
    sums = {k: sum(p[k] for p in procs) for k in (*ESSENTIAL, "forward_nograd")}
    is_driver = [p["main"] and "--suite" in p["argv"] for p in procs]
    startup = sum(p["first_region_cpu_seconds"] or p["cpu_seconds"] for p, d in zip(procs, is_driver) if not d)
    driver = sum(p["cpu_seconds"] - sum(p[k] for k in (*ESSENTIAL, "forward_nograd"))
                 for p, d in zip(procs, is_driver) if d)
    workers = sum(p["cpu_seconds"] - (p["first_region_cpu_seconds"] or p["cpu_seconds"])
                  - sum(p[k] for k in (*ESSENTIAL, "forward_nograd")) for p, d in zip(procs, is_driver) if not d)

    essential = sum(sums[k] for k in ESSENTIAL)
    cpu = max(cpu, sum(p["cpu_seconds"] for p in procs))  # an orphan (forkserver) may go unreaped
    untracked = cpu - sum(p["cpu_seconds"] for p in procs)

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads split over "
          f"{args.jobs} jobs; Python {platform.python_version()}; {date.today()}")
    print(f"`{' '.join(cmd[cmd.index('-m') - 1:]).replace(sys.executable, 'python')}`: wall {wall:.0f} s, "
          f"CPU {cpu:.0f} s over {len(procs)} processes with torch")
    print(f"efficiency (forward with autograd + backward + optimizer step) / CPU: **{essential / cpu:.2f}** "
          f"(goal ≥ 0.75)")
    rows = [("forward, autograd on", sums["forward_grad"]), ("backward", sums["backward"]),
            ("optimizer step", sums["optimizer_step"]), ("forward, no autograd", sums["forward_nograd"]),
            ("driver outside passes (imports, planning, hashing, records, queue)", driver),
            ("workers and attack children: start-up to their first pass (imports, data)", startup),
            ("workers and attack children after it, outside passes (data, metrics, Python)", workers),
            ("processes without torch (e.g. multiprocessing's resource tracker)", untracked)]
    print("| where | CPU s | share |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.0f} | {seconds / cpu:.2f} |")
    others_rss = sorted((p.get("max_rss_mib", 0.0) for p, d in zip(procs, is_driver) if not d), reverse=True)
    driver_rss = max((p.get("max_rss_mib", 0.0) for p, d in zip(procs, is_driver) if d), default=0.0)
    print(f"\npeak RSS per process (ru_maxrss; goal ≤ 2048 MiB each): driver {driver_rss:.0f} MiB, the largest "
          f"others {', '.join(f'{r:.0f}' for r in others_rss[:2 * args.jobs])} MiB (RSS counts shared pages in "
          "every process, so these do not add up to the suite's memory)")
    if args.py_spy and raw.exists():
        print("\npy-spy samples by cause (all processes):\n| cause | share |\n|---|---|")
        for cause, share in _causes(raw):
            print(f"| {cause} | {share:.2f} |")
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)  # a late resource-tracker flush may race
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
