"""Plots from records: privacy–utility with the Pareto front, and reconstruction grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from privbench.report.frame import load_frame  # noqa: E402

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


def threat_points(table, ok: pd.DataFrame
                  ) -> dict[str, list[tuple[str, float, float, str, tuple[float, float, float, float]]]]:
    """The privacy–utility points of a board's main table, per threat model column: ``(defense, utility,
    privacy = 1 − advantage, status, (utility lo, hi, privacy lo, hi))`` for configs that *claim* the threat model;
    status ``ok`` (a competent attack's measured advantage) or ``unknown`` (every attack of it failed its competence
    gate: no privacy number, not privacy). Not-claimed and not-applicable cells are left out."""
    from privbench.report.rows import Status

    claimed: dict[str, set[str]] = {}
    for config, g in ok.groupby("config", sort=False):
        is_ref = g.defense.iloc[0] == g.reference.iloc[0]  # the reference is measured on every threat model
        claimed[str(config)] = {"*"} if is_ref else set(str(g.claims.iloc[0]).split(","))
    out: dict[str, list] = {}
    for col in table.columns:
        if col.unit != "advantage":
            continue
        pts = []
        for row in table.rows:
            u, c = row.cells.get("utility"), row.cells.get(col.key)
            name = row.cells["defense"].text
            mine = claimed.get(name, set())
            if u is None or u.estimate is None or c is None or not ("*" in mine or col.key in mine):
                continue
            x = u.estimate
            if c.status is Status.OK and c.estimate is not None:
                a = c.estimate
                pts.append((name, x.mean, 1 - a.mean, "ok", (x.lo, x.hi, 1 - a.hi, 1 - a.lo)))
            elif c.status is Status.ATTACK_FAILED:
                pts.append((name, x.mean, float("nan"), "unknown", (x.lo, x.hi, float("nan"), float("nan"))))
        out[col.title.removeprefix("leakage: ")] = pts
    return out


def _threat_plot(table, ok: pd.DataFrame, suite: str, dataset: str, path: Path) -> bool:
    """One panel per threat model: claimed configs with CI bars, the Pareto front of the measured ones, and configs
    whose attacks all failed drawn as hollow markers in an "unknown" band above the axis (never as private)."""
    panels = {t: p for t, p in threat_points(table, ok).items() if p}
    if not panels:
        return False
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (threat, pts) in zip(axes.flat, panels.items()):
        measured = [p for p in pts if p[3] == "ok"]
        for name, x, y, _, (xlo, xhi, ylo, yhi) in measured:
            xe = [[min(x - xlo, 1.0)], [min(xhi - x, 1.0)]]
            ye = [[min(y - ylo, 1.5)], [min(yhi - y, 1.5)]]
            ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", ms=5, capsize=2, lw=0.8, zorder=3)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
        for name, x, *_ in (p for p in pts if p[3] == "unknown"):
            ax.scatter(x, 1.12, s=30, facecolors="none", edgecolors="grey", zorder=3)
            ax.annotate(f"{name} (attack failed)", (x, 1.12), textcoords="offset points", xytext=(4, 3), fontsize=6,
                        color="grey")
        if measured:
            util = np.array([p[1] for p in measured])
            priv = np.array([p[2] for p in measured])
            front = pareto_front(util, priv)
            if len(front) > 1:
                ax.plot(util[front], priv[front], "--", color="grey", lw=1, label="Pareto front", zorder=2)
                ax.legend(loc="lower left", fontsize=7)
        ax.axhspan(1.06, 1.2, color="0.93", zorder=0)
        ax.text(0.0, 1.17, "privacy unknown: every attack failed", fontsize=6, color="grey")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.1, 1.2)
        ax.set_xlabel("utility: task top-1 accuracy")
        ax.set_ylabel("privacy: 1 − calibrated advantage")
        ax.set_title(threat, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{suite} · {dataset}: privacy vs utility per threat model (claimed only; 95% CI bars)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_PNG_META)
    plt.close(fig)
    return True


def _grid_plot(df: pd.DataFrame, out_dir: Path, suite: str, dataset: str, attack: str, path: Path,
               n: int = 4) -> bool:
    """One row per defense config: ``n`` targets, each as original | released | reconstructed by ``attack``.

    Drawn with Pillow, not matplotlib: the grid is only pixels and labels, and a figure per attack through
    matplotlib's Agg renderer cost ``report`` about 0.15 s each (docs/BENCHMARKS.md, issue 15). Tiles are upscaled by
    an integer factor with nearest-neighbour sampling, so every source pixel stays a visible square.
    """
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
        lines.append(tiles)
        names.append(str(r.config))
    tile_h, tile_w = lines[0][0].shape[:2]
    scale = max(1, -(-72 // max(tile_h, tile_w)))  # tiles about 72 px on their long side
    th, tw, gap, row_gap = tile_h * scale, tile_w * scale, 2, 6
    font = ImageFont.load_default(size=12)
    small = ImageFont.load_default(size=10)
    label_w = 20 + max(int(font.getlength(name)) for name in names)
    cols = max(len(tiles) for tiles in lines)
    title_h, foot_h = 26, 18
    width = label_w + cols * (tw + gap) + 8
    height = title_h + len(lines) * (th + row_gap) + foot_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((width // 2, 6), f"{suite} · {dataset} · {attack}: original / released / reconstructed", fill="black",
              font=font, anchor="mt")
    for i, (tiles, name) in enumerate(zip(lines, names)):
        y = title_h + i * (th + row_gap)
        draw.text((label_w - 8, y + th // 2), name, fill="black", font=font, anchor="rm")
        for j, t in enumerate(tiles):
            big = np.repeat(np.repeat(t, scale, axis=0), scale, axis=1)
            canvas.paste(Image.fromarray(np.ascontiguousarray(big)), (label_w + j * (tw + gap), y))
    y = height - foot_h + 3
    for j in range(cols):
        draw.text((label_w + j * (tw + gap) + tw // 2, y), ("orig", "rel.", "rec.")[j % 3], fill="black",
                  font=small, anchor="mt")
    canvas.save(path, format="PNG", optimize=False)
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
    from privbench.report.intervals import ranked
    from privbench.report.tables import build_board

    for suite, sdf in df.groupby("suite", sort=True):
        mains = {t.key: t for t in build_board(out_dir, suite, sdf).tables}
        sdf = ranked(sdf)  # positive controls are in the competence gate, not in the plots
        for dataset in sorted(sdf.dataset.unique()):
            main = mains.get(f"main-{dataset}")
            p = plots / f"{suite}_{dataset}_privacy_utility.png"
            d = sdf[(sdf.status == "ok") & (sdf.dataset == dataset)]
            if main is not None and _threat_plot(main, d, suite, dataset, p):
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
