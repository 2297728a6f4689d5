"""Compare the non-cost metrics of two runs of the same suite, cell by cell (docs/REPRODUCIBILITY.md).

    python benchmarks/compare_runs.py RUN_A RUN_B [--markdown]

For each metric family (utility, privacy by name, leakage, ...) prints how many cells agree bit for bit and the
largest absolute difference, plus the torch thread counts and CPUs the two runs recorded.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

from privbench.core.records import iter_records


def flatten(obj: object, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def family(key: str) -> str:
    """Group metric paths: ``privacy.psnr`` -> ``privacy.psnr``; ``privacy.attack_*`` -> ``privacy.attack_*``."""
    parts = key.split(".")
    if parts[0] == "privacy" and len(parts) > 1 and parts[1].startswith("attack_"):
        return "privacy.attack_*"
    return ".".join(parts[:2])


def compare(a: Path, b: Path) -> tuple[dict[str, list[float]], dict[str, set]]:
    ra = {p.name: r for p, r in iter_records(a / "records") if r["status"] == "ok"}
    rb = {p.name: r for p, r in iter_records(b / "records") if r["status"] == "ok"}
    deltas: dict[str, list[float]] = defaultdict(list)
    info: dict[str, set] = defaultdict(set)
    for name in sorted(ra.keys() & rb.keys()):
        for side, rec in (("a", ra[name]), ("b", rb[name])):
            m = rec["provenance"].get("machine", {})
            info[f"{side}.threads"].add(m.get("torch_threads"))
            info[f"{side}.cpu"].add(m.get("cpu"))
        fa = flatten({k: v for k, v in ra[name]["metrics"].items() if k != "cost"})
        fb = flatten({k: v for k, v in rb[name]["metrics"].items() if k != "cost"})
        for key in fa.keys() & fb.keys():
            if key.endswith("_seconds"):
                continue
            deltas[family(key)].append(abs(fa[key] - fb[key]))
    info["cells"] = {len(ra.keys() & rb.keys())}
    return deltas, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    deltas, info = compare(args.a, args.b)
    print(" ".join(f"{k}={sorted(map(str, v))}" for k, v in sorted(info.items())))
    print("| metric | values | bit-identical | max abs difference | median abs difference (of the differing) |")
    print("|---|---|---|---|---|")
    for fam, d in sorted(deltas.items()):
        diff = sorted(x for x in d if x != 0.0)
        med = diff[len(diff) // 2] if diff else 0.0
        print(f"| {fam} | {len(d)} | {sum(x == 0.0 for x in d)} | {max(d):.4g} | {med:.4g} |"
              if d and not any(math.isnan(x) for x in d) else f"| {fam} | {len(d)} | — | — | — |")


if __name__ == "__main__":
    main()
