"""``privbench leaderboard build``: the submissions leaderboard, rendered from ``submission.json`` files only.

It reads JSON (never records of submitted code, never the submitted source) and imports nothing a submission
wrote, so building it runs no submitted code. One table per dataset: the published baselines of the protocol, then
every entry's configurations; utility and per-threat-model leakage on the public seeds next to the held-out seeds
(MICO's final column), each a mean with its 95% CI; entries whose card overclaims are marked ``unreliable``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from privbench.core.atomic import atomic_write_text
from privbench.core.errors import InputError
from privbench.core.stats import Interval
from privbench.report.rows import Board, Cell, Column, Direction, Row, Status, Table

#: Version of the ``submission.json`` layout (written by :mod:`privbench.submit.submission`).
SUBMISSION_SCHEMA = 1

_LEAK_NOTE = ("Leakage is the calibrated advantage of the strongest competent attack of each threat model over its "
              "no-release prior (0 = no better than not seeing the release, 1 = the identity release), gated on the "
              "protocol's reference defense as on every privbench board. \"held-out\" columns come from seeds the "
              "submitter never saw; \"—\" where the maintainers have not run them.")


def load_entries(root: Path) -> list[dict[str, Any]]:
    """Every ``submission.json`` under ``root`` (sorted by path), validated as plain JSON."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such directory of submissions")
    entries = []
    for path in sorted(root.rglob("submission.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not a readable submission.json ({e})") from None
        if not isinstance(entry, Mapping) or entry.get("schema") != SUBMISSION_SCHEMA:
            raise InputError(f"{path}: unknown submission schema {entry.get('schema') if isinstance(entry, Mapping) else None!r}"
                             f" (expected {SUBMISSION_SCHEMA}; re-run privbench submit)")
        for key in ("card", "public", "source", "claims", "unreliable", "suite", "heldout"):
            if key not in entry:
                raise InputError(f"{path}: missing field {key!r}")
        entries.append({**entry, "_path": path})
    if not entries:
        raise InputError(f"{root}: no submission.json found (run privbench submit first)")
    protocols = {json.dumps([e["suite"]["name"], e["suite"]["datasets"], e["suite"]["attacks"],
                             e["suite"]["public_seeds"]]) for e in entries}
    if len(protocols) > 1:
        raise InputError(f"{root}: entries were evaluated under different protocols; build one leaderboard per "
                         "suite version")
    return entries


def _interval(d: Optional[Mapping[str, Any]]) -> Optional[Interval]:
    return None if d is None else Interval.from_json(d)


def _cell(d: Optional[Mapping[str, Any]]) -> Cell:
    """A leakage cell of the summary (status + interval), as the main tables show it."""
    if d is None:
        return Cell(Status.NOT_APPLICABLE)
    return Cell(Status(d["status"]), _interval(d["interval"]), title=d.get("title", ""))


def _find(summary: Optional[list[Mapping[str, Any]]], row: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    for r in summary or ():
        if r["dataset"] == row["dataset"] and r["defense"] == row["defense"] and r["params"] == row["params"]:
            return r
    return None


def claims_flag(claims: list[Mapping[str, Any]]) -> str:
    """The "claims" cell of one configuration: ``unreliable: ...`` for claims that flatter the defense, then
    ``not measured: ...``, claims outside their CI on the unflattering side, and claims checked against a cell
    that is not ``ok`` (e.g. ``attack failed``); "claims within CI" only when every claim was measured by an ok
    cell and lies inside its CI; empty without claims."""
    def measured(c: Mapping[str, Any]) -> str:
        return f"{c['quantity']} claimed {c['claimed']:.3g}, measured {c['measured']['mean']:.3g}"

    checked = [c for c in claims if c["measured"] is not None]
    parts = [label + "; ".join(texts) for label, texts in (
        ("unreliable: ", [measured(c) for c in checked if c["optimistic"]]
         + [f"{c['quantity']} claimed {c['claimed']:.3g}: {c['note']}" for c in claims
            if c["measured"] is None and c["optimistic"]]),  # e.g. a stated ε the DP audit could not check
        ("not measured: ", [c["quantity"] for c in claims if c["measured"] is None and not c["optimistic"]]),
        ("conservative: ", [measured(c) for c in checked if c["outside"] and not c["optimistic"]]),
        ("", [f"{c['quantity']} claimed {c['claimed']:.3g}, {c['note']}" for c in checked
              if not c["outside"] and str(c.get("note", "")).startswith("unverified")]),
        ("not established: ", [f"{c['quantity']} ({c['status']})" for c in checked if not c["outside"]
                               and c["status"] not in (None, "ok")]),
    ) if texts]
    return "; ".join(parts) if parts else ("claims within CI" if claims else "")


def build_board(entries: list[dict[str, Any]]) -> Board:
    first = entries[0]
    datasets = first["suite"]["datasets"]
    threats = sorted({t for e in entries for r in e["public"]["summary"] for t in r["leakage"]})
    columns = [Column("entry", "entry"), Column("defense", "defense"), Column("seeds", "seeds"),
               Column("utility", "utility", "top-1", Direction.HIGHER_BETTER),
               Column("utility_heldout", "utility, held-out", "top-1", Direction.HIGHER_BETTER),
               Column("drop", "drop vs reference", "top-1", Direction.LOWER_BETTER)]
    for t in threats:
        columns += [Column(t, f"leakage: {t}", "advantage", Direction.LOWER_BETTER),
                    Column(f"{t}_heldout", f"leakage: {t}, held-out", "advantage", Direction.LOWER_BETTER)]
    columns += [Column("flag", "claims"), Column("source", "source sha256")]
    builtin_ids = {r["defense"] for e in entries for r in e["public"]["summary"]} - \
        {d["id"] for e in entries for d in e["card"]["defenses"]}
    base = max(entries, key=lambda e: (e["heldout"] is not None, str(e["_path"])))  # baselines with held-out seeds
    tables = []
    for dataset in datasets:
        rows = []
        for e, is_base in [(base, True)] + [(e, False) for e in entries]:
            held = (e.get("heldout") or {}).get("summary")
            mine = {d["id"] for d in e["card"]["defenses"]}
            for r in e["public"]["summary"]:
                if r["dataset"] != dataset or (r["defense"] in builtin_ids) != is_base or \
                        (not is_base and r["defense"] not in mine):
                    continue
                h = _find(held, r)
                flag = "" if is_base else claims_flag([c for c in e["claims"] if c["config"] == r["config"]
                                                       and c["dataset"] == r["dataset"]])
                cells = {"entry": Cell.of_text("published baseline" if is_base else e["card"]["name"]),
                         "defense": Cell.of_text(r["config"]), "seeds": Cell.of_text(str(len(r["seeds"]))),
                         "utility": Cell.of(_interval(r["utility"])),
                         "utility_heldout": Cell.of(_interval(h["utility"]) if h else None),
                         "drop": Cell.of(_interval(r["drop"])), "flag": Cell.of_text(flag),
                         "source": Cell.of_text("" if is_base else e["source"]["sha256"][:12])}
                for t in threats:
                    cells[t] = _cell(r["leakage"].get(t))
                    cells[f"{t}_heldout"] = _cell(h["leakage"].get(t)) if h else Cell(Status.NOT_APPLICABLE)
                rows.append(Row(cells))
        tables.append(Table(f"submissions-{dataset}", dataset, tuple(columns), tuple(rows), (_LEAK_NOTE,)))
    intro = (f"Generated by `privbench leaderboard build` from {len(entries)} `submission.json` file(s); do not edit. "
             f"Protocol: suite `{first['suite']['name']}`, public seeds {first['suite']['public_seeds']}, attacks "
             + ", ".join(f"`{a}`" for a in first["suite"]["attacks"]) + ".",
             "Entries ran in a sandbox (docs/SUBMITTING.md); the leaderboard is rendered from their JSON only.")
    return Board("submissions", intro, tuple(tables))


def build(root: Path, out: Path) -> list[Path]:
    """Write ``out/submissions.md``, ``out/submissions.html`` and one CSV per dataset (with the banner of
    ``out/STALE.md`` when the entries predate the code: :func:`privbench.report.stale.stale_notice`)."""
    from privbench.core.textsafe import markdown_cell
    from privbench.report.render import to_csv, to_html, to_markdown
    from privbench.report.stale import stale_notice

    out = Path(out)
    entries = load_entries(root)
    for e in entries:  # a hand-edited or truncated entry is named, not a traceback
        try:
            build_board([e])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise InputError(f"{e['_path']}: malformed submission entry ({type(err).__name__}: {err}); "
                             "re-run privbench submit") from None
    board = dataclasses.replace(build_board(entries), stale=stale_notice(out))
    banner = f"> **Stale board.** {board.stale}\n\n" if board.stale else ""
    md = ["# Submissions leaderboard\n\n" + banner + "\n\n".join(markdown_cell(p) for p in board.intro) + "\n"]
    for table in board.tables:
        md.append(f"\n## {markdown_cell(table.title)}\n\n" + to_markdown(table))
    paths = {out / "submissions.md": "".join(md),
             out / "submissions.html": to_html(board, title="privbench: submissions leaderboard")}
    for table in board.tables:
        paths[out / f"{table.key}.csv"] = to_csv(table)
    for path, text in paths.items():
        atomic_write_text(path, text)
    return list(paths)
