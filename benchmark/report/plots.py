"""Plots from records: privacy–utility with the Pareto front, and reconstruction grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .tables import summary_table  # noqa: E402
from .frame import config_name, load_frame  # noqa: E402

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
    ax.set_ylabel("privacy: 1 − worst-case leakage")
    ax.set_title(f"{suite} · {dataset}: privacy vs utility")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_PNG_META)
    plt.close(fig)


def _grid_plot(df: pd.DataFrame, out_dir: Path, suite: str, dataset: str, path: Path, n: int = 4) -> bool:
    rows = df[(df.dataset == dataset) & (df.status == "ok") & df.samples.notna()]
    rows = rows[rows.seed == rows.seed.min()].assign(_n=rows.defense != "none")
    rows = rows.sort_values(["attack", "_n", "defense", "strength"], kind="stable")
    if rows.empty:
        return False
    attack = rows.attack.iloc[0]
    rows = rows[rows.attack == attack]
    fig, axes = plt.subplots(len(rows), 3 * n, figsize=(3 * n * 0.7, len(rows) * 0.78), squeeze=False)
    for i, r in enumerate(rows.itertuples()):
        with np.load(out_dir / r.samples, allow_pickle=False) as z:
            parts = [z["original"], z["released"], z["reconstructed"]]
        for j in range(n):
            for k, arr in enumerate(parts):
                ax = axes[i, 3 * j + k]
                ax.axis("off")
                if j < len(arr):
                    img = arr[j].transpose(1, 2, 0)
                    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
                if i == 0:
                    ax.set_title(("orig", "rel.", "rec.")[k], fontsize=7)
        axes[i, 0].text(-0.15, 0.5, config_name(r.defense, r.strength_name, r.strength), fontsize=7,
                        ha="right", va="center", transform=axes[i, 0].transAxes)
    fig.suptitle(f"{suite} · {dataset} · {attack}: original / released / reconstructed", fontsize=8)
    fig.subplots_adjust(left=0.2, wspace=0.05, hspace=0.1)
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
        table = summary_table(sdf)
        for dataset in sorted(sdf.dataset.unique()):
            if not table.empty:
                p = plots / f"{suite}_{dataset}_privacy_utility.png"
                _pareto_plot(table, suite, dataset, p)
                written.append(p)
            p = plots / f"{suite}_{dataset}_reconstructions.png"
            if _grid_plot(sdf, out_dir, suite, dataset, p):
                written.append(p)
    return written
