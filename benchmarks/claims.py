"""Print the paper-claim checks (C3 VisualMixer, C4 masknet) computed from a records directory.

Usage: python benchmarks/claims.py leaderboards/quick
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from benchmark.records import iter_records


def _frame(out_dir: Path) -> pd.DataFrame:
    rows = []
    for _, r in iter_records(out_dir / "records"):
        if r["status"] != "ok":
            continue
        p, m = r["defense"]["params"], r["metrics"]
        rows.append({"dataset": r["dataset"]["name"], "defense": r["defense"]["id"], "params": p,
                     "label": r["defense"]["label"], "attack": r["attack"]["id"], "utility": m["utility"]["top1"],
                     "udrop": m["utility"]["drop"], "top1": m["privacy"].get("top1"),
                     "chance": m["privacy"].get("chance_top1"), "psnr": m["privacy"].get("psnr"),
                     "masked_psnr": m["privacy"].get("masked-psnr"), "leakage": m["leakage"]})
    return pd.DataFrame(rows)


def c3(df: pd.DataFrame) -> None:
    print("## C3 VisualMixer: utility drop where the best linkage attack is within 2x chance")
    vm = df[df.defense == "visualmixer"]
    for dataset, g in vm.groupby("dataset"):
        print(f"\n{dataset}:")
        print("| target_vfe | optimizer | utility | drop (pp) | linkage top-1 | histogram-linkage top-1 | chance | "
              "inversion PSNR |")
        print("|---|---|---|---|---|---|---|---|")
        for label, h in sorted(g.groupby("label"), key=lambda kv: (kv[1].params.iloc[0]["target_vfe"],
                                                                    kv[1].params.iloc[0]["optimizer"])):
            by = {a: x.iloc[0] for a, x in h.groupby("attack")}
            t = h.params.iloc[0]["target_vfe"]
            link, hist, inv = by.get("linkage"), by.get("histogram-linkage"), by.get("inversion-decoder")
            print(f"| {t} | {h.params.iloc[0]['optimizer']} | {h.utility.iloc[0]:.3f} | {100 * h.udrop.iloc[0]:.1f} | "
                  f"{link.top1 if link is not None else float('nan'):.3f} | "
                  f"{hist.top1 if hist is not None else float('nan'):.3f} | "
                  f"{(link if link is not None else hist).chance:.4f} | "
                  f"{inv.psnr if inv is not None else float('nan'):.2f} |")
        linkers = g[g.attack.isin(["linkage", "histogram-linkage"])]
        best = linkers.groupby("label").apply(lambda x: (x.top1 / x.chance).max(), include_groups=False)
        ok = best[best <= 2.0]
        print("\nstrength where the best linkage attack is within 2x chance:",
              "none in the sweep" if ok.empty else ", ".join(ok.index))


def c4(df: pd.DataFrame) -> None:
    print("\n## C4 masknet vs plain retraining on masked images")
    mk = df[(df.defense == "masking")].drop_duplicates("label")
    print("| dataset | masked | masknet acc | plain acc | difference (pp) |")
    print("|---|---|---|---|---|")
    for (dataset, masked), g in mk.groupby([mk.dataset, mk.params.map(lambda p: p["masked"])]):
        net = g[g.params.map(lambda p: p["masknet"])].utility
        plain = g[~g.params.map(lambda p: p["masknet"])].utility
        if len(net) and len(plain):
            print(f"| {dataset} | {masked} | {net.iloc[0]:.3f} | {plain.iloc[0]:.3f} | "
                  f"{100 * (net.iloc[0] - plain.iloc[0]):+.1f} |")


def main() -> int:
    df = _frame(Path(sys.argv[1] if len(sys.argv) > 1 else "leaderboards/quick"))
    c3(df)
    c4(df)
    return 0


if __name__ == "__main__":
    sys.exit(main())
