"""Render the typed row model (:mod:`privbench.report.rows`) as Markdown, CSV and one static HTML page.

Pure functions of a :class:`~privbench.report.rows.Table` or :class:`~privbench.report.rows.Board`: every number
comes from the model; this module only formats it. The output is deterministic (the same input gives byte-identical
text), so committed leaderboards can be checked by regenerating them.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass

import jinja2
from markupsafe import Markup, escape

from privbench.core.textsafe import csv_cell, markdown_cell
from privbench.report.rows import Board, Cell, Column, Direction, Estimate, Status, Table

_DIRECTION_HINT = {
    Direction.HIGHER_BETTER: "higher is better for the defender",
    Direction.LOWER_BETTER: "lower is better for the defender",
    Direction.NEUTRAL: "neutral: no better direction",
}
_STATUS_CLASS = {
    Status.OK: "ok",
    Status.ATTACK_FAILED: "attack-failed",
    Status.NOT_CLAIMED: "not-claimed",
    Status.NOT_APPLICABLE: "not-applicable",
    Status.TEXT: "text",
}
_STATUS_HELP = {
    Status.ATTACK_FAILED: "the attack did not beat its prior on the reference defense, so its numbers support no "
                          "privacy claim (the measured advantage is shown small)",
    Status.NOT_CLAIMED: "the defense does not claim protection against this threat model",
    Status.NOT_APPLICABLE: "no attack of this threat model applies to the release",
}
_NA = "—"


# ---------------------------------------------------------------------------------------------------------- shared


def is_estimate_column(table: Table, column: Column) -> bool:
    """Whether ``column`` holds estimates: some row has an estimate or a status other than ``TEXT`` there."""
    cells = (row.cells.get(column.key) for row in table.rows)
    return any(c is not None and (c.estimate is not None or c.status is not Status.TEXT) for c in cells)


def _sort_number(x: float) -> str:
    return "NaN" if math.isnan(x) else repr(x)


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def estimate_parts(estimate: Estimate, decimals: int) -> tuple[str, str]:
    """``(mean, interval)`` strings: ``("0.512", "± 0.020")`` for a symmetric CI, else ``("0.512", "[0.49, 0.6]")``."""
    mean, lo, hi = estimate.mean, estimate.lo, estimate.hi
    if abs((hi - mean) - (mean - lo)) <= 1e-9 + 1e-6 * abs(mean):
        return _fmt(mean, decimals), f"± {_fmt(estimate.half_width, decimals)}"
    return _fmt(mean, decimals), f"[{_fmt(lo, decimals)}, {_fmt(hi, decimals)}]"


def format_estimate(estimate: Estimate, decimals: int) -> str:
    """``"{mean} ± {half}"`` for a symmetric CI, else ``"{mean} [{lo}, {hi}]"``, with ``decimals`` decimals."""
    return " ".join(estimate_parts(estimate, decimals))


def _label(status: Status) -> str:
    """Visible text of a non-numeric status (``attack failed``, ``not claimed``, ``—``)."""
    return _NA if status is Status.NOT_APPLICABLE else status.value


def cell_text(cell: Cell | None, column: Column) -> str:
    """Plain-text rendering of one cell (``""`` for a missing cell), shared by Markdown and the HTML fallback."""
    if cell is None:
        return ""
    if cell.status is Status.TEXT:
        return cell.text
    number = format_estimate(cell.estimate, column.decimals) if cell.estimate is not None else ""
    if cell.status in (Status.ATTACK_FAILED, Status.NOT_CLAIMED):
        return f"{cell.status.value} ({number})" if number else cell.status.value
    return number or _NA


# -------------------------------------------------------------------------------------------------------- Markdown


def to_markdown(table: Table) -> str:
    """A GitHub Markdown table (numeric columns right-aligned), then the table's notes as paragraphs. Headers and
    cells go through :func:`privbench.core.textsafe.markdown_cell` (one line each, no raw HTML, ``|`` escaped)."""
    cols = table.columns
    lines = [
        "| " + " | ".join(markdown_cell(c.header) for c in cols) + " |",
        "|" + "|".join("---:" if is_estimate_column(table, c) else "---" for c in cols) + "|",
    ]
    for row in table.rows:
        lines.append("| " + " | ".join(markdown_cell(cell_text(row.cells.get(c.key), c)) for c in cols) + " |")
    blocks = ["\n".join(lines), *table.notes]
    return "\n".join(line.rstrip() for line in "\n\n".join(blocks).splitlines()) + "\n"


# ------------------------------------------------------------------------------------------------------------- CSV


def _g(x: float) -> str:
    return "%.6g" % x


def to_csv(table: Table) -> str:
    """CSV with ``\\n`` line endings: per estimate column ``key, key_lo, key_hi, key_status, key_seeds``; per text
    column ``key``. Floats as ``%.6g``; a missing value is the empty string; text goes through
    :func:`privbench.core.textsafe.csv_cell` (no spreadsheet formula)."""
    numeric = [is_estimate_column(table, c) for c in table.columns]
    header: list[str] = []
    for c, num in zip(table.columns, numeric):
        header += [c.key, f"{c.key}_lo", f"{c.key}_hi", f"{c.key}_status", f"{c.key}_seeds"] if num else [c.key]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([csv_cell(h) for h in header])
    for row in table.rows:
        values: list[str] = []
        for c, num in zip(table.columns, numeric):
            cell = row.cells.get(c.key)
            if not num:
                values.append(csv_cell(cell.text) if cell is not None else "")
                continue
            est = cell.estimate if cell is not None else None
            text = csv_cell(cell.text) if cell is not None and cell.status is Status.TEXT else ""
            values += [_g(est.mean) if est else text, _g(est.lo) if est else "", _g(est.hi) if est else "",
                       cell.status.value if cell is not None else "", str(est.seeds) if est else ""]
        writer.writerow(values)
    return out.getvalue()


# ------------------------------------------------------------------------------------------------------------ HTML


@dataclass(frozen=True)
class _HtmlHead:
    header: str
    title: str  # tooltip: unit and direction
    kind: str  # "num" or "text"


@dataclass(frozen=True)
class _HtmlCell:
    classes: str
    sort: str  # data-sort: the numeric sort key (repr, "NaN" if none) or the text
    main: str  # visible text (mean, text, or status label)
    aside: str  # secondary text: the CI, or the measured number of a failed/unclaimed cell
    title: str  # tooltip


@dataclass(frozen=True)
class _HtmlRow:
    cells: tuple[_HtmlCell, ...]
    thumbnails: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _HtmlTable:
    key: str
    title: str
    heads: tuple[_HtmlHead, ...]
    rows: tuple[_HtmlRow, ...]
    notes: tuple[str, ...]
    samples: bool


def _head(column: Column, numeric: bool) -> _HtmlHead:
    parts = [f"unit: {column.unit}" if column.unit else "unitless", _DIRECTION_HINT[column.direction]]
    if numeric:
        parts.append("mean over seeds with its 95% CI")
    return _HtmlHead(column.header, "; ".join(parts) + " (click to sort)", "num" if numeric else "text")


def _html_cell(cell: Cell | None, column: Column, numeric: bool) -> _HtmlCell:
    kind = "num" if numeric else "text"
    if cell is None:
        return _HtmlCell(f"{kind} missing", "NaN" if numeric else "", "", "", "")
    if cell.status is Status.TEXT:
        return _HtmlCell("num text" if numeric else "text", "NaN" if numeric else cell.text, cell.text, "", cell.title)
    sort = _sort_number(cell.sort_key()) if numeric else cell_text(cell, column)
    classes = f"{kind} {_STATUS_CLASS[cell.status]}"
    est = cell.estimate
    if est is None:
        return _HtmlCell(classes, sort, _label(cell.status), "", cell.title)
    mean, interval = estimate_parts(est, column.decimals)
    seeds = (f"mean of {est.seeds} seed{'s' if est.seeds != 1 else ''}; "
             f"95% CI [{_fmt(est.lo, column.decimals)}, {_fmt(est.hi, column.decimals)}]")
    title = "\n".join(t for t in (cell.title, seeds) if t)
    if cell.status is Status.OK:
        return _HtmlCell(classes, sort, mean, interval, title)
    return _HtmlCell(classes, sort, _label(cell.status), f"{mean} {interval}", title)


def _html_table(table: Table) -> _HtmlTable:
    numeric = [is_estimate_column(table, c) for c in table.columns]
    rows = []
    for i, row in enumerate(table.rows):
        for caption, uri in row.thumbnails:
            if not uri.startswith("data:image/"):
                raise ValueError(f"table {table.key} row {i}: thumbnail {caption!r} is not a data:image URI "
                                 "(the page must not fetch anything)")
        cells = tuple(_html_cell(row.cells.get(c.key), c, n) for c, n in zip(table.columns, numeric))
        rows.append(_HtmlRow(cells, row.thumbnails))
    heads = tuple(_head(c, n) for c, n in zip(table.columns, numeric))
    samples = any(row.thumbnails for row in table.rows)
    return _HtmlTable(table.key, table.title, heads, tuple(rows), table.notes, samples)


def inline_markdown(text: str) -> Markup:
    """Escape ``text`` for HTML and turn backtick-quoted spans into ``<code>`` elements."""
    parts = re.split(r"`([^`]+)`", text)  # odd indices are the code spans
    return Markup("").join(Markup("<code>{}</code>").format(p) if i % 2 else escape(p) for i, p in enumerate(parts))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("privbench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["inline_md"] = inline_markdown
    return env


def to_html(board: Board, *, title: str | None = None) -> str:
    """One self-contained static HTML page (inline CSS and sorter, no external fetch) showing every table of ``board``.

    Headers sort their table on click (numbers by value, missing last; text alphabetically; a second click reverses).
    Thumbnails must be ``data:image/...`` URIs (raises ``ValueError`` otherwise).
    """
    statuses = {c.status for t in board.tables for r in t.rows for c in r.cells.values()}
    legend = [(_label(s), _STATUS_CLASS[s], text) for s, text in _STATUS_HELP.items() if s in statuses]
    template = _environment().get_template("board.html.j2")
    return template.render(
        title=title or f"privbench: suite {board.suite}",
        intro=board.intro,
        stale=board.stale,
        tables=[_html_table(t) for t in board.tables],
        legend=legend,
    )
