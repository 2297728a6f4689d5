"""The stale-board marker: a board whose records predate code changes that alter its numbers holds a ``STALE.md``
(the commit its records come from, what changed since); its pages show it as a banner."""

from __future__ import annotations

from pathlib import Path

STALE = "STALE.md"


def stale_notice(out_dir: Path) -> str:
    """The text of ``out_dir/STALE.md`` as one paragraph (headings dropped), or ``""`` when the board is fresh.

    A board whose records predate code changes that alter its numbers declares it there: the commit its records
    come from and what changed since. Its tables still regenerate from the records; the freshness test then skips
    only the check that the records match this checkout's code."""
    path = Path(out_dir) / STALE
    if not path.is_file():
        return ""
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return " ".join(lines)
