"""The near-copy audit's perturbation sweep (issue 26; docs/AUDIT.md): recall of edited copies and false flags of
fresh images, per edit of :data:`privbench.audit.edits.SWEEP`, on real digits (mnist5k: look-alikes) and photo tiles
(photo-patches, 32 px), with and without ``--aux``.

    python benchmarks/audit_sweep.py [--originals 400] [--copies 100] [--fresh 600] [--rate 0.01]

Per dataset: ``--originals`` originals, ``--originals`` aux images and ``--fresh`` fresh images, disjoint, from the
built-in pool; per edit, ``--copies`` originals with structure (RMS contrast
:data:`privbench.audit.copies.STRUCTURED` or more) are edited
(:func:`privbench.audit.sweep.sweep`). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's privbench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--originals", type=int, default=400)
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--fresh", type=int, default=600)
    ap.add_argument("--rate", type=float, default=0.01)
    args = ap.parse_args()
    from privbench.audit.sweep import sweep

    t0 = time.perf_counter()
    print("| dataset | edit | recall, --aux | recall, leave-one-out | original among candidates |")
    print("|---|---|---:|---:|---:|")
    notes = []
    for dataset in ("mnist5k", "photo-patches"):
        for r in sweep(dataset, args.originals, args.copies, args.fresh, args.rate):
            if "edit" not in r:
                w = r["weak recall"]
                notes.append(f"{dataset}: {r['flat originals']:.1%} of the originals are flat (never tested), "
                             f"{r['weak originals']:.1%} have weak structure (tested, not edited above)"
                             + (f"; the combined edit on {r['weak copies']} weak originals: recall "
                                f"{w['aux']:.3f} with --aux, {w['leave-one-out']:.3f} leave-one-out" if w else ""))
                continue
            print(f"| {dataset} | {r['edit']} | {r['recall aux']:.3f} | {r['recall leave-one-out']:.3f} | "
                  f"{r['found']:.3f} |")
            ff = (r["false flags aux"], r["false flags leave-one-out"])
        notes.append(f"{dataset}: false flags among {args.fresh} fresh images: {ff[0]:.4f} with --aux, "
                     f"{ff[1]:.4f} leave-one-out (nominal rate {args.rate:g})")
    print()
    for n in notes:
        print(f"- {n}")
    print(f"\n{args.copies} copies per edit, {args.originals} originals and aux images; "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
