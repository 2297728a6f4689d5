"""Plots from records: privacy–utility with the Pareto front, and reconstruction grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .tables import summary_frame  # noqa: E402
from .frame import load_frame  # noqa: E402

_PNG_META = {"Software": None}


def pareto_front(utility: np.ndarray, privacy: np.ndarray) -> np.ndarray:
    """Indices of points not dominated in (utility ↑, privacy ↑), sorted by utility."""
    idx = []
    for i in range(len(utility)):
        dominated = np.any((utility >= utility[i]) & (privacy >= privacy[i]) &
                           ((utility > utility[i]) | (privacy > privacy[i])))
        if not dominated:
            idx.append(i)
    return np.array(sorted(idx, key=lambda i: utility[i]), dtype=int)


def _pareto_plot(table: pd.DataFrame, suite: str, dataset: str, path: Path) -> None:
    t = table[table.dataset == dataset].dropna(subset=["utility", "worst leakage"])
    util = t.utility.to_numpy(float)
    priv = 1.0 - t["worst leakage"].to_numpy(float)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    families = sorted({name.split()[0] for name in t.defense})
    colors = {f: plt.cm.tab10(i % 10) for i, f in enumerate(families)}
    for u, p, name in zip(util, priv, t.defense):
        ax.scatter(u, p, color=colors[name.split()[0]], s=36, zorder=3)
        ax.annotate(name, (u, p), textcoords="offset points", xytext=(4, 3), fontsize=7)
    front = pareto_front(util, priv)
    if len(front):
        ax.plot(util[front], priv[front], "--", color="grey", lw=1, label="Pareto front", zorder=2)
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel("utility: task top-1 accuracy")
    ax.set_ylabel("privacy: 1 − worst calibrated advantage")
    ax.set_title(f"{suite} · {dataset}: privacy vs utility")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, max(1.02, float(priv.max(initial=0.0)) + 0.05))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_PNG_META)
    plt.close(fig)


def _montage(tiles: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Concatenate equally sized ``(H, W, C)`` uint8 tiles horizontally with white padding."""
    h, _, c = tiles[0].shape
    sep = np.full((h, pad, c), 255, np.uint8)
    parts = []
    for t in tiles:
        parts += [t, sep]
    return np.concatenate(parts[:-1], axis=1)


def _grid_plot(df: pd.DataFrame, out_dir: Path, suite: str, dataset: str, attack: str, path: Path,
               n: int = 4) -> bool:
    """One row per defense config: ``n`` targets, each as original | released | reconstructed by ``attack``."""
    rows = df[(df.dataset == dataset) & (df.status == "ok") & df.samples.notna() & (df.attack_name == attack)]
    rows = rows[rows.seed == rows.seed.min()].assign(_n=rows.defense != rows.reference)
    rows = rows.sort_values(["_n", "defense", "strength", "config"], kind="stable")
    if rows.empty:
        return False
    lines, names = [], []
    for r in rows.itertuples():
        with np.load(out_dir / r.samples, allow_pickle=False) as z:
            parts = [z["original"], z["released"], z["reconstructed"]]
        k = min(n, len(parts[0]))
        tiles = [p[j].transpose(1, 2, 0) for j in range(k) for p in parts]
        tiles = [np.repeat(t, 3, axis=2) if t.shape[2] == 1 else t for t in tiles]
        lines.append(_montage(tiles, pad=1))
        names.append(r.config)
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    sep = np.full((3, width, 3), 255, np.uint8)
    grid = np.concatenate([x for line in lines for x in (line, sep)][:-1], axis=0)
    tile_h = lines[0].shape[0]
    label_w = 0.3 + 0.065 * max(len(name) for name in names)  # inches for the row labels at fontsize 7
    fig_w = label_w + 0.2 + grid.shape[1] / 40
    fig_h = 0.7 + grid.shape[0] / 40
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    fig.subplots_adjust(left=label_w / fig_w, right=1 - 0.1 / fig_w, bottom=0.35 / fig_h, top=1 - 0.35 / fig_h)
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([i * (tile_h + 3) + tile_h / 2 for i in range(len(names))], names, fontsize=7)
    tile_w = parts[0].shape[-1] + 1
    ax.set_xticks([i * tile_w + tile_w / 2 for i in range(3 * k)], ["orig", "rel.", "rec."] * k, fontsize=6)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{suite} · {dataset} · {attack}: original / released / reconstructed", fontsize=8)
    fig.savefig(path, dpi=110, metadata=_PNG_META)
    plt.close(fig)
    return True


def _rate_plot(df: pd.DataFrame, suite: str, dataset: str, path: Path) -> bool:
    """Rate–utility and rate–privacy: bits per image of coded releases against utility and each reconstruction
    attack's PSNR, one marker per defense config; lines join the configs of one defense at one strength, by rate."""
    rows = df[(df.dataset == dataset) & (df.status == "ok") & df.bits_per_image.notna()]
    if rows.empty:
        return False
    fig, (ax_u, ax_p) = plt.subplots(1, 2, figsize=(10, 4.2))
    rows = rows.assign(series=[d if not sn else f"{d} {sn}={v:g}"
                               for d, sn, v in zip(rows.defense, rows.strength_name, rows.strength)])
    per_config = rows.groupby(["series", "config"], sort=True).agg(bits=("bits_per_image", "mean"),
                                                                     utility=("utility", "mean")).reset_index()
    for i, (series, g) in enumerate(per_config.groupby("series", sort=True)):
        g = g.sort_values("bits")
        ax_u.plot(g.bits, g.utility, "o-", color=plt.cm.tab10(i % 10), label=series)
    recon = rows[rows.primary_key == "psnr"]
    markers = "osd^v"
    for j, (attack, g) in enumerate(recon.groupby("attack_name", sort=True)):
        for i, (series, h) in enumerate(g.groupby("series", sort=True)):
            h = h.groupby("config").agg(bits=("bits_per_image", "mean"), psnr=("primary", "mean")).sort_values("bits")
            ax_p.plot(h.bits, h.psnr, markers[j % len(markers)] + "-", color=plt.cm.tab10(i % 10),
                      label=f"{series} · {attack}")
    for ax, ylabel in ((ax_u, "utility: task top-1 accuracy"), (ax_p, "attack PSNR dB (lower = more private)")):
        ax.set_xscale("log")
        ax.set_xlabel("coded bits per image (real bytes × 8)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{suite} · {dataset}: rate–utility and rate–privacy", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_PNG_META)
    plt.close(fig)
    return True


def write_plots(out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    df = load_frame(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    for suite, sdf in df.groupby("suite", sort=True):
        table = summary_frame(sdf)
        for dataset in sorted(sdf.dataset.unique()):
            if not table.empty:
                p = plots / f"{suite}_{dataset}_privacy_utility.png"
                _pareto_plot(table, suite, dataset, p)
                written.append(p)
            p = plots / f"{suite}_{dataset}_rate.png"
            if _rate_plot(sdf, suite, dataset, p):
                written.append(p)
            with_samples = sdf[(sdf.dataset == dataset) & sdf.samples.notna()]
            for attack in sorted(with_samples.attack_name.unique()):
                p = plots / f"{suite}_{dataset}_recon_{attack.replace('[', '_').replace(']', '').replace('=', '-')}.png"
                if _grid_plot(sdf, out_dir, suite, dataset, attack, p):
                    written.append(p)
    return written
