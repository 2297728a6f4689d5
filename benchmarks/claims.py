"""Print the paper-claim checks computed from a records directory: C3 (VisualMixer) and C4 (masknet) from the quick
suite, C1 (split-DNN privacy autoencoder) from the split suite, C5 (synthetic data from BN statistics, and the
model-side battery against none / dp-sgd / bn-synthetic) from the quick suite.

Usage: python benchmarks/claims.py leaderboards/quick [leaderboards/split]
"""

from __future__ import annotations

import json
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
                     "masked_psnr": m["privacy"].get("masked-psnr"), "leakage": m["leakage"],
                     "edge_psnr": m["privacy"].get("edge-psnr"), "release": m.get("release", {}),
                     "bits": m.get("bitrate", {}).get("bits_per_image"), "privacy": m["privacy"],
                     "attack_params": r["attack"]["params"], "epsilon": m.get("dp", {}).get("epsilon")})
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


def c1(df: pd.DataFrame) -> None:
    print("\n## C1 split-DNN privacy autoencoder: inversion at (near) equal accuracy, edge-PSNR, bits vs raw features")
    for dataset, sp in df[df.defense.isin(["split-ae", "split-none"])].groupby("dataset"):
        print(f"\n### {dataset}")
        _c1_table(sp)


def _c1_table(sp: pd.DataFrame) -> None:
    print("| config | utility | bytes/image | bytes vs raw features | decoder PSNR | decoder edge-PSNR | "
          "white-box PSNR | white-box edge-PSNR | adversary loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, g in sorted(sp.groupby("label"), key=lambda kv: json.dumps(kv[1].params.iloc[0], sort_keys=True)):
        by = {a: x.iloc[0] for a, x in g.groupby("attack")}
        p, r = g.params.iloc[0], g.release.iloc[0]
        name = g.defense.iloc[0] + (f" w_rec={p['w_rec']} b={p['bottleneck']} bits={p['bits']}"
                                    if g.defense.iloc[0] == "split-ae" else f" bits={p['bits']}")
        dec, opt = by.get("inversion-decoder"), by.get("inversion-optim")
        cell = (lambda row, key: f"{row[key]:.2f}" if row is not None and row[key] is not None else "—")
        print(f"| {name} | {g.utility.iloc[0]:.3f} | {r.get('bytes_per_image', float('nan')):.0f} | "
              f"{r.get('bytes_vs_raw_features', float('nan')):.3f} | {cell(dec, 'psnr')} | {cell(dec, 'edge_psnr')} | "
              f"{cell(opt, 'psnr')} | {cell(opt, 'edge_psnr')} | {r.get('adversary_loss_final', float('nan')):.4f} |")


def c5(df: pd.DataFrame) -> None:
    print("\n## C5 synthetic data from BN statistics: utility from scratch, distance to originals, model-side battery")
    for dataset, d in df[df.defense.isin(["none", "dp-sgd", "bn-synthetic"])].groupby("dataset"):
        print(f"\n### {dataset}")
        print("| defense | utility | ε | NN SSIM | NN memorised | DLG PSNR | iDLG PSNR | IG PSNR | training PSNR (IG) | "
              "memorisation PSNR / SSIM | membership AUC (best) | LiRA online TPR@1%FPR | GAN SSIM |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label, g in sorted(d.groupby("label"), key=lambda kv: (kv[1].defense.iloc[0] != "none", kv[0])):
            # Per attack id, its strongest configuration (highest PSNR, else first).
            by = {a: max(x.privacy, key=lambda p: p.get("psnr") or float("-inf")) for a, x in g.groupby("attack")}

            def f(attack: str, key: str, fmt: str = "{:.2f}") -> str:
                v = by.get(attack, {}).get(key)
                return fmt.format(v) if v is not None else "—"

            eps = g.epsilon.dropna()
            name = g.defense.iloc[0] + "".join(f" {k}={v}" for k, v in sorted(g.params.iloc[0].items()))
            print(f"| {name} | {g.utility.iloc[0]:.3f} | {f'{eps.iloc[0]:.2f}' if len(eps) else '—'} | "
                  f"{f('nearest-neighbour', 'ssim', '{:.3f}')} | {f('nearest-neighbour', 'memorized_rate')} | "
                  f"{f('gradient-dlg', 'psnr')} | {f('gradient-idlg', 'psnr')} | {f('gradient-ig', 'psnr')} | "
                  f"{f('gradient-ig', 'training_psnr')} | {f('memorization', 'psnr')} / "
                  f"{f('memorization', 'ssim', '{:.3f}')} | {f('membership', 'membership_auc', '{:.3f}')} | "
                  f"{f('membership', 'lira_online_tpr_at_1pct_fpr', '{:.3f}')} | {f('gan-attack', 'ssim', '{:.3f}')} |")


def main() -> int:
    dirs = [Path(a) for a in sys.argv[1:]] or [Path("leaderboards/quick")]
    df = pd.concat([_frame(d) for d in dirs], ignore_index=True)
    if (df.defense == "visualmixer").any():
        c3(df)
    if (df.defense == "masking").any():
        c4(df)
    if df.defense.isin(["split-ae"]).any() and df.attack.isin(["inversion-optim"]).any():
        c1(df)
    if (df.defense == "bn-synthetic").any():
        c5(df)
    return 0


if __name__ == "__main__":
    sys.exit(main())
