"""Peak memory of a whole command, summed over its process tree (driver, workers, attack and sandbox children).

Samples `/proc` every `--interval` seconds (Linux only) and prints, for the moment the sum peaked: the summed PSS
(proportional set size: a page shared by k processes counts 1/k in each, so the sum is the memory the tree really
holds), the summed RSS (shared pages counted once per process: an upper bound) and the largest single process.
Also prints the wall time.

Usage: python benchmarks/peak_memory.py [--interval 0.5] -- privbench run --suite video --out DIR --seeds 0
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (read from /proc/*/stat's parent field)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        parent[int(entry.name)] = int(fields[1])
    tree, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        tree += kids
        frontier += kids
    return tree


def _memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB of one process from /proc/PID/smaps_rollup; (0, 0) once it has exited."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def _role(pid: int) -> str:
    """What a process of the tree is, from its command line (pid and a short name)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"{pid} (exited)"
    if "forkserver import main" in cmd:
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            parent = b""
        return f"{pid} {'attack/platform child' if b'forkserver' in parent else 'fork server'}"
    if "spawn_main" in cmd:
        return f"{pid} spawned (pool worker or queue manager)"
    return f"{pid} {cmd[:60]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("give the command after --")
    if not Path("/proc/self/smaps_rollup").exists():
        ap.error("needs Linux's /proc/PID/smaps_rollup")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = (0, 0, 0, 0)  # summed PSS, summed RSS, largest RSS, processes
    breakdown: list[tuple[int, str]] = []
    while proc.poll() is None:
        pids = [proc.pid, *_children(proc.pid)]
        mem = [_memory_kib(p) for p in pids]
        total = (sum(m[0] for m in mem), sum(m[1] for m in mem), max(m[1] for m in mem), len(pids))
        if total[0] > peak[0]:
            peak = total
            breakdown = [(m[0], _role(p)) for p, m in zip(pids, mem)]
        time.sleep(args.interval)
    wall = time.perf_counter() - t0
    mib = [v / 1024 for v in peak[:3]]
    print(f"\n{date.today()}, {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}: "
          f"wall {wall:.0f} s, exit {proc.returncode}")
    print(f"peak summed PSS {mib[0]:.0f} MiB (summed RSS {mib[1]:.0f} MiB; largest process {mib[2]:.0f} MiB; "
          f"{peak[3]} processes at that moment)")
    for pss, role in sorted(breakdown, reverse=True):
        print(f"  {pss / 1024:7.0f} MiB PSS  {role}")
    print("command: python benchmarks/peak_memory.py -- " + " ".join(cmd))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
