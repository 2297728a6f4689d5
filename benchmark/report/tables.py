"""Per-suite leaderboard tables, built from records as the typed row model (:mod:`privbench.report.rows`) and
rendered to Markdown, CSV and HTML (:mod:`privbench.report.render`).

Every number is a mean over seeds with its 95% CI (:mod:`privbench.core.stats`); leakage is the calibrated advantage
over the no-release prior (:mod:`privbench.core.calibration`), one column per threat model, never a max across them.
An attack counts only where it beats its prior on the reference defense (a competence gate); a threat model a
defense does not claim protection against shows "not claimed".
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from privbench.core.atomic import atomic_write_text
from privbench.core.errors import InputError
from privbench.core.stats import combine
from privbench.core.threats import ThreatModel
from privbench.report.frame import load_frame
from privbench.report.intervals import (
    Competence,
    advantage_interval,
    competence,
    ranked,
    recipe_drop_interval,
    tpr_interval,
    utility_interval,
)
from privbench.report.rows import Board, Cell, Column, Direction, Estimate, Row, Status, Table
from privbench.report.stale import stale_notice

METHOD_NOTE = (
    "Each number is the mean over seeds ± its 95% CI: a bootstrap over targets within each seed, combined with "
    "the spread across seeds (Student's t; docs/METHODS.md, Statistics). Leakage is the calibrated advantage "
    "(score − prior) / (1 − prior) of the strongest competent attack of each threat model: 0 = no better than "
    "the no-release prior, 1 = the identity release. \"attack failed\": no attack of that threat model beats its "
    "prior on the reference defense, so the cell makes no privacy claim. \"not claimed\": the defense does not "
    "claim protection against that threat model (the measured advantage is shown in parentheses).")


def board_threats(ok: pd.DataFrame) -> list[ThreatModel]:
    present = set(ok.threat.dropna())
    return [t for t in ThreatModel if t.value in present]


def config_groups(ok: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """Ranked defense configs of one dataset (no positive controls), the reference first, then by defense id and
    strength."""
    groups = list(ranked(ok).groupby(["defense", "config", "defense_params"], sort=True))

    def order(item: tuple[tuple, pd.DataFrame]) -> tuple:
        (defense, config, _), g = item
        s = g.strength.iloc[0]
        return (defense != g.reference.iloc[0], defense, -np.inf if np.isnan(s) else s, config)

    return sorted(groups, key=order)


def _thumbnail(out_dir: Path, g: pd.DataFrame, competent: set[str]) -> tuple[tuple[str, str], ...]:
    """A PNG strip (4 targets: what each reconstruction is scored against, over the reconstructions) of the row's
    strongest *competent* reconstruction attack (by mean advantage over seeds), from the lowest seed."""
    from PIL import Image

    rows = g[g.samples.notna() & g.advantage.notna() & g.attack_name.isin(competent)]
    if rows.empty:
        return ()
    best = rows.groupby("attack_name").advantage.mean().sort_index().idxmax()
    r = rows[rows.attack_name == best].sort_values("seed").iloc[0]
    with np.load(out_dir / r.samples, allow_pickle=False) as z:
        orig, rec = z["original"][:4], z["reconstructed"][:4]
    strip = np.concatenate([np.concatenate(list(orig), axis=2), np.concatenate(list(rec), axis=2)], axis=1)
    img = strip.transpose(1, 2, 0)
    img = img[..., 0] if img.shape[2] == 1 else img
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    what = "best-matching originals" if r.statistic == "best-match-ssim" else "originals"
    return ((f"{r.attack_name} (seed {int(r.seed)}): {what} over reconstructions", uri),)


def main_table(out_dir: Path, dataset: str, ok: pd.DataFrame, comp: dict[tuple[str, str], Competence]) -> Table:
    """Compact table: utility, drop, worst calibrated advantage per threat model, bits per pixel, cost."""
    threats = board_threats(ok)
    columns = [Column("defense", "defense"), Column("seeds", "seeds"),
               Column("utility", "utility", "top-1", Direction.HIGHER_BETTER),
               Column("drop", "drop vs reference", "top-1", Direction.LOWER_BETTER)]
    recipe = ok.recipe_reference.notna().any()
    if recipe:
        columns.append(Column("recipe_drop", "drop vs same recipe", "top-1", Direction.LOWER_BETTER))
    columns += [Column(t.value, f"leakage: {t.description}", "advantage", Direction.LOWER_BETTER) for t in threats]
    columns += [Column("bpp", "bits per pixel", "bit", Direction.LOWER_BETTER),
                Column("cost", "defense build", "s", Direction.LOWER_BETTER, decimals=1)]
    rows = []
    for (defense, config, _), g in config_groups(ok):
        is_ref = defense == g.reference.iloc[0]
        cells = {"defense": Cell.of_text(config), "seeds": Cell.of_text(str(g.seed.nunique())),
                 "utility": Cell.of(utility_interval(g)),
                 "drop": Cell.of(Estimate(0.0, 0.0, 0.0, int(g.seed.nunique())) if is_ref else
                                 utility_interval(g, "drop"))}  # the reference against itself: exactly 0
        if recipe:
            cells["recipe_drop"] = Cell.of(recipe_drop_interval(g, ok),
                                           title="vs this defense's recipe without its protection (e.g. σ = 0)")
        for t in threats:
            cells[t.value] = threat_cell(g[g.threat == t.value], dataset, comp,
                                          claimed=is_ref or t.value in g.claims.iloc[0].split(","))
        bpp = g.dropna(subset=["bits_per_image", "pixels"]).groupby("seed")[["bits_per_image", "pixels"]].first()
        cells["bpp"] = Cell.of(combine((bpp.bits_per_image / bpp.pixels).to_numpy(float), np.full(len(bpp), np.nan))
                               if len(bpp) else None)
        cost = g.dropna(subset=["defense_seconds"]).groupby("seed")[["defense_seconds"]].first()
        cells["cost"] = Cell.of(combine(cost.defense_seconds.to_numpy(float), np.full(len(cost), np.nan))
                                if len(cost) else None)
        competent = {a for a in g.attack_name.unique() if comp[(dataset, a)].competent}
        rows.append(Row(cells, _thumbnail(out_dir, g, competent)))
    return Table(f"main-{dataset}", f"{dataset}", tuple(columns), tuple(rows))


def threat_cell(g: pd.DataFrame, dataset: str, comp: dict[tuple[str, str], Competence], claimed: bool) -> Cell:
    """Worst competent attack of one threat model for one defense config."""
    if g.empty:
        return Cell(Status.NOT_APPLICABLE)
    per_attack = {a: advantage_interval(h) for a, h in g.groupby("attack_name", sort=True)}
    competent = {a: i for a, i in per_attack.items() if i is not None and comp[(dataset, a)].competent}
    if not competent:
        best = max(((a, i) for a, i in per_attack.items() if i is not None), key=lambda x: x[1].mean, default=None)
        title = "no attack of this threat model beats its prior on the reference defense"
        if best is not None:
            title += f"; best measured: {best[0]}"
        return Cell(Status.ATTACK_FAILED, best[1] if best else None, title=title)
    attack, interval = max(competent.items(), key=lambda x: (x[1].mean, x[0]))
    if not claimed:
        return Cell(Status.NOT_CLAIMED, interval, title=f"strongest competent attack: {attack}")
    return Cell(Status.OK, interval, title=f"strongest competent attack: {attack}")


def detail_table(dataset: str, threat: ThreatModel, ok: pd.DataFrame,
                 comp: dict[tuple[str, str], Competence]) -> Table:
    """One threat model's attacks: each attack's calibrated advantage, and its raw score with the prior."""
    sub = ok[ok.threat == threat.value]
    attacks = sorted(sub.attack_name.unique())
    columns = [Column("defense", "defense")]
    tpr_attacks = {a for a in attacks if sub[sub.attack_name == a].tpr_1pct.notna().any()}
    for a in attacks:
        stat = sub[sub.attack_name == a].statistic.dropna()
        columns += [Column(f"{a}", a, "advantage", Direction.LOWER_BETTER),
                    Column(f"{a}:raw", f"{a} raw", stat.iloc[0] if len(stat) else "", Direction.LOWER_BETTER)]
        if a in tpr_attacks:
            columns.append(Column(f"{a}:tpr", f"{a} TPR at 1% FPR", "", Direction.LOWER_BETTER))
    rows = []
    for (_, config, _), g in config_groups(sub):
        cells = {"defense": Cell.of_text(config)}
        for a in attacks:
            h = g[g.attack_name == a]
            if h.empty:
                continue
            i = advantage_interval(h)
            if comp[(dataset, a)].competent:
                cells[a] = Cell.of(i)
            else:
                cells[a] = Cell(Status.ATTACK_FAILED, i, title="does not beat its prior on the reference")
            per = h.groupby("seed")[["raw", "prior", "tpr_1pct", "n_units"]].first()
            raw = combine(per.raw.to_numpy(float), np.full(len(per), np.nan))
            cells[f"{a}:raw"] = Cell.of(raw, title=f"prior {per.prior.mean():.3f}")
            if a in tpr_attacks:
                cells[f"{a}:tpr"] = Cell.of(tpr_interval(per),
                                            title="best method's TPR at 1% FPR; members = half the candidates")
        rows.append(Row(cells))
    notes = [f"Raw: the attack's mean {', '.join(sorted(set(sub.statistic.dropna())))} before calibration "
             "(the cell's tooltip gives its prior)."]
    if tpr_attacks:
        smallest = sub.min_fpr.dropna()
        if len(smallest):
            notes.append("TPR at 1% FPR is shown only where at least 10 non-members can be false positives at that "
                         f"rate (smallest resolvable FPR here: {smallest.max():.4f})"
                         + ("; TPR at 0.1% FPR is not resolvable with these candidate counts." if smallest.max() > 0.001
                            else "."))
    return Table(f"{threat.value}-{dataset}", f"{dataset} · {threat.description}", tuple(columns), tuple(rows),
                 tuple(n for n in notes if n))


def competence_table(dataset: str, ok: pd.DataFrame, comp: dict[tuple[str, str], Competence]) -> Table:
    """Competence gate: each attack's calibrated advantage on the reference defense and on its positive controls."""
    columns = (Column("attack", "attack"), Column("threat", "threat model"), Column("statistic", "statistic"),
               Column("basis", "judged on"), Column("prior", "prior", "", Direction.NEUTRAL),
               Column("advantage", "advantage", "", Direction.NEUTRAL),
               Column("control", "positive control (bar)"),
               Column("control_advantage", "control advantage", "", Direction.NEUTRAL), Column("gate", "gate"))
    rows = []
    sub = ok[ok.dataset == dataset]
    for attack, g in sub.groupby("attack_name", sort=True):
        c = comp[(dataset, attack)]
        ref = ranked(g)[ranked(g).config == c.basis.removesuffix(" (reference not applicable)")]
        prior = ref.groupby("seed").prior.first()
        failed = [r for r in c.controls if not r.passed]
        shown = failed[0] if failed else (min(c.controls, key=lambda r: (r.interval.lo if r.interval else -1.0))
                                          if c.controls else None)
        cells = {"attack": Cell.of_text(attack), "threat": Cell.of_text(str(g.threat.iloc[0])),
                 "basis": Cell.of_text(c.basis),
                 "statistic": Cell.of_text(str(g.statistic.dropna().iloc[0]) if g.statistic.notna().any() else ""),
                 # the prior is a reference value, not an estimate: its spread over seeds, or with one seed its value
                 "prior": (Cell.of(combine(prior.to_numpy(float), np.full(len(prior), np.nan))) if len(prior) > 1
                           else Cell.of_text(f"{float(prior.iloc[0]):.3f}") if len(prior) else Cell.of(None)),
                 "advantage": Cell.of(c.interval),
                 "control": Cell.of_text("; ".join(f"{r.config} (≥ {r.bar:g}){'' if r.passed else ': failed'}"
                                                   for r in c.controls) or "none run"),
                 "control_advantage": Cell.of(shown.interval if shown is not None else None),
                 "gate": Cell.of_text("competent" if c.competent else "attack failed")}
        rows.append(Row(cells))
    return Table(f"competence-{dataset}", f"{dataset} · competence gate", columns, tuple(rows),
                 ("An attack counts toward leakage only when it passes its positive controls: on each control run "
                  "(a defense built to be broken, `defenses/controls.py`, or a plain reference), the CI's lower "
                  "bound of its advantage reaches the control's bar. Where the suite runs none of its controls, it "
                  "must beat its prior on the reference defense (CI above 0; for an attack the reference exposes "
                  "nothing to, e.g. a mask attack: on the config where it does best). The control advantage shown "
                  "is the first failed control's, else the weakest.",))


def _num(values: pd.Series, decimals: int = 3) -> str:
    """The distinct values of a per-seed DP number as text ("—" if none): one value, or "lo–hi" across seeds."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "—"
    lo, hi = float(v.min()), float(v.max())
    return f"{lo:.{decimals}f}" if math.isclose(lo, hi, rel_tol=1e-9, abs_tol=10 ** -decimals / 2) else \
        f"{lo:.{decimals}f}–{hi:.{decimals}f}"


def dp_table(dataset: str, sdf: pd.DataFrame) -> Optional[Table]:
    """Every DP configuration's guarantee and its audit: ε (the tighter accountant), PLD and RDP, per person, per
    shared update, and the audited lower bounds ε̂ beside the claims they test (docs/METHODS.md, DP accounting and
    audits); ``None`` when no configuration states an ε."""
    d = sdf[(sdf.dataset == dataset) & sdf.dp_epsilon.notna()]
    if d.empty:
        return None
    columns = (Column("config", "defense"), Column("epsilon", "ε"), Column("pld", "ε PLD"), Column("rdp", "ε RDP"),
               Column("person", "ε per person"), Column("update", "ε per update"),
               Column("step", "ε̂ per step (claim)"), Column("run", "ε̂ per run (claim)"), Column("verdict", "audit"))
    rows = []
    for config, g in d.groupby("config", sort=True):
        per = g.drop_duplicates("seed")
        audited = per.dp_audit_violated.notna().any()
        violated = audited and bool((pd.to_numeric(per.dp_audit_violated, errors="coerce") > 0).any())
        vacuous = audited and bool((pd.to_numeric(per.dp_audit_run_claim, errors="coerce")
                                    >= pd.to_numeric(per.dp_audit_run_ceiling, errors="coerce")).all())
        verdict = ("not audited" if not audited else "VIOLATION: ε̂ above its claim" if violated else
                   "consistent (ε̂ ≤ claim" + ("; the run's claim is above what its audit can show)" if vacuous
                                              else ")"))
        rows.append(Row({
            "config": Cell.of_text(str(config)), "epsilon": Cell.of_text(_num(per.dp_epsilon)),
            "pld": Cell.of_text(_num(per.dp_epsilon_pld)), "rdp": Cell.of_text(_num(per.dp_epsilon_rdp)),
            "person": Cell.of_text(_num(per.dp_epsilon_person, 2)),
            "update": Cell.of_text(_num(per.dp_per_update)),
            "step": Cell.of_text(f"{_num(per.dp_audit_step_epsilon)} ({_num(per.dp_audit_step_claim)})"
                                 if audited else "—"),
            "run": Cell.of_text(f"{_num(per.dp_audit_run_epsilon)} ({_num(per.dp_audit_run_claim)})"
                                if audited else "—"),
            "verdict": Cell.of_text(verdict)}))
    return Table(f"dp-{dataset}", f"{dataset} · DP guarantees and their audits", columns, tuple(rows),
                 ("ε at the record's δ: the tighter valid accountant (PLD or RDP). Per person: all of one identity's "
                  "samples. Per update: one shared update of the gradients surface (one sample replaced). ε̂: "
                  "empirical lower bounds at 95% per configuration (step-level canary audit; one-run audit of "
                  "Steinke, Nasr & Jagielski 2023), at most 5% false alarms per configuration over its seeds; a lower "
                  "bound above its claim fails that seed's cells and flags the configuration here. Records made before issue 24 carry only Opacus' RDP ε, unaudited.",))


def _p(x: float) -> str:
    return "" if x != x else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def claims_table(ok: pd.DataFrame) -> Optional[Table]:
    """The papers' claims this suite can test, as the papers state them: the paper's number beside the measured
    one, the test, the Holm-adjusted p-value, the effect the design detects and the verdict
    (:mod:`privbench.report.claims`)."""
    from privbench.report.claims import evaluate_claims

    results = evaluate_claims(ok)
    if not results:
        return None
    columns = (Column("claim", "claim"), Column("dataset", "dataset"), Column("statement", "statement"),
               Column("paper", "paper"), Column("difference", "measured", "", Direction.NEUTRAL),
               Column("unit", "unit"), Column("test", "test"), Column("p", "p (Holm)"),
               Column("detects", "detects ≥"), Column("verdict", "verdict"))
    rows = tuple(Row({"claim": Cell.of_text(r.claim), "dataset": Cell.of_text(r.dataset),
                      "statement": Cell.of_text(r.statement), "paper": Cell.of_text(r.paper),
                      "difference": Cell.of(r.difference) if r.difference is not None else Cell.of_text("—"),
                      "unit": Cell.of_text(r.unit),
                      "test": Cell.of_text((r.test.describe(r.unit) if r.test else "")
                                           + ("" if r.mcnemar != r.mcnemar else f"; McNemar p {_p(r.mcnemar)}")),
                      "p": Cell.of_text(_p(r.p) if r.verdict != "refuted" else f"{_p(r.p_refute)} (opposite)"),
                      "detects": Cell.of_text("" if r.detects is None or r.detects != r.detects
                                              or r.detects == float("inf") else f"{r.detects:.3g}"),
                      "verdict": Cell.of_text(r.verdict)}) for r in results)
    return Table("claims", "claims (docs/METHODS.md)", columns, rows,
                 ("Each statement is tested as the paper states it: a direction against a bound, or a magnitude by "
                  "equivalence (TOST) within the stated margin. Differences are paired by seed and, for accuracies, "
                  "on the same test samples. p-values are Holm-adjusted over this board's claims; confirmed: "
                  "adjusted p < 0.05; refuted: the opposite's adjusted p < 0.05 (shown with \"(opposite)\"); "
                  "else inconclusive. \"detects ≥\": the effect this design detects with 80% power.",))


#: Where ``privbench video-case --out`` puts its files inside a board, for the report to show them.
VIDEO_CASE_DIR = "video_case"


def video_case_table(out_dir: Path) -> Optional[Table]:
    """The real-video case of a board (``<board>/video_case/video_case.json``), or ``None`` when it has none."""

    path = Path(out_dir) / VIDEO_CASE_DIR / "video_case.json"
    if not path.is_file():
        return None
    try:
        case = json.loads(path.read_text())
        detectors = case["detectors"]
        independent = set(case["independent"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a video-case summary ({type(e).__name__}: {e})") from None
    columns = (Column("detector", "detector"), Column("independent", "independent of the defense"),
               Column("before", "detections before"), Column("missed", "after, on unchanged pixels"),
               Column("rewritten", "after, on rewritten pixels"),
               Column("residual", "residual (unchanged ÷ before)", direction=Direction.LOWER_BETTER))
    strip = path.with_name("video_case.png")
    thumbs = (("before (top) / after (bottom)",
               "data:image/png;base64," + base64.b64encode(strip.read_bytes()).decode()),) if strip.is_file() else ()
    rows = []
    for i, (name, d) in enumerate(sorted(detectors.items())):
        residual = "—" if d.get("residual") is None else f"{d['residual']:.2f}"
        rows.append(Row({"detector": Cell.of_text(name), "independent": Cell.of_text("yes" if name in independent
                                                                                     else "no"),
                         "before": Cell.of_text(str(d["before"])), "missed": Cell.of_text(str(d["after_unchanged"])),
                         "rewritten": Cell.of_text(str(d["after_changed"])), "residual": Cell.of_text(residual)},
                        thumbs if i == 0 else ()))
    params = ", ".join(f"{k}={v}" for k, v in sorted(case["defense"]["params"].items()))
    notes = (f"`{case['defense']['id']}` ({params}) on {case['frames']} frames of `{case['file']}` "
             f"({case['size'][1]}×{case['size'][0]}), made by `privbench video-case`; frames before and after: "
             f"[{VIDEO_CASE_DIR}/video_case.png](../{VIDEO_CASE_DIR}/video_case.png). A detection after the defense on "
             "pixels it left unchanged is a person it missed; on rewritten pixels it is the avatar or redacted "
             "region, which a neutral avatar is meant to show.",)
    return Table("video-case", "real video (video-case)", columns, tuple(rows), notes)


def build_board(out_dir: Path, suite: str, sdf: pd.DataFrame) -> Board:
    ok = sdf[sdf.status == "ok"]
    reference = ", ".join(f"`{r}`" for r in sorted(set(sdf.reference)))
    intro = (f"Generated by `privbench report` from the records; do not edit. Utility = top-1 test accuracy of the "
             f"task model the defense prescribes; drop = vs the reference defense ({reference}) on the same seed.",
             METHOD_NOTE)
    tables: list[Table] = []
    comp = competence(ok)
    for dataset in sorted(ok.dataset.unique()):
        d = ok[ok.dataset == dataset]
        tables.append(main_table(out_dir, dataset, d, comp))
        tables.append(competence_table(dataset, d, comp))
        tables += [detail_table(dataset, t, d, comp) for t in board_threats(d)]
        dp = dp_table(dataset, sdf)
        if dp is not None:
            tables.append(dp)
    claims = claims_table(ok)
    if claims is not None:
        tables.append(claims)
    case = video_case_table(out_dir)
    if case is not None:
        tables.append(case)
    return Board(suite, intro, tuple(tables), stale_notice(out_dir))


def status_markdown(sdf: pd.DataFrame) -> str:
    counts = sdf.status.value_counts()
    md = ["\nCells: " + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("ok", "skipped", "failed")) + ".\n"]
    skipped = sdf[sdf.status == "skipped"]
    if len(skipped):
        md.append("\nSkipped pairings (the release lacks what the attack requires):\n\n"
                  "| attack | reason | cells |\n|---|---|---|\n")
        for (attack, reason), g in skipped.groupby(["attack_name", "reason"], sort=True):
            md.append(f"| {attack} | {reason.splitlines()[0][:160]} | {len(g)} |\n")
    failed = sdf[sdf.status == "failed"]
    if len(failed):
        md.append("\nFailed cells:\n\n| cell | reason |\n|---|---|\n")
        for r in failed.sort_values("file").itertuples():
            md.append(f"| {r.file.removesuffix('.json')} | {r.reason.splitlines()[0][:160]} |\n")
    return "".join(md)


def write_tables(out_dir: Path) -> list[Path]:
    """Write ``tables/<suite>.md``, ``tables/<suite>.html``, one ``tables/<suite>__<table>.csv`` per table and
    ``tables/<suite>_status.csv`` from the records."""
    from privbench.report.render import to_csv, to_html, to_markdown

    out_dir = Path(out_dir)
    df = load_frame(out_dir)
    written: list[Path] = []
    tables_dir = out_dir / "tables"
    for suite, sdf in df.groupby("suite", sort=True):
        board = build_board(out_dir, suite, sdf)
        banner = f"> **Stale board.** {board.stale}\n\n" if board.stale else ""
        md = [f"# Suite `{suite}`\n\n" + banner + "\n\n".join(board.intro) + "\n"]
        for table in board.tables:
            md.append(f"\n## {table.title}\n\n" + to_markdown(table))
        md.append(status_markdown(sdf))
        paths = {tables_dir / f"{suite}.md": "".join(md), tables_dir / f"{suite}.html": to_html(board)}
        for table in board.tables:
            paths[tables_dir / f"{suite}__{table.key}.csv"] = to_csv(table)
        status = sdf[["file", "status", "reason"]].sort_values("file")
        paths[tables_dir / f"{suite}_status.csv"] = status.to_csv(index=False, lineterminator="\n")
        for path, text in paths.items():
            atomic_write_text(path, text)
        written += list(paths)
    return written
