"""Committed leaderboards are generated, never hand-edited: regenerating their tables from the committed records
changes nothing, every committed record validates, and every record comes from this checkout's code at a clean
tree (``privbench report --check``), unless the board declares itself stale in ``STALE.md`` (the commits its
records come from, and what changed since): then its tables must still regenerate identically, and they show the
declaration as a banner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from privbench.core.records import iter_records
from privbench.report import write_report
from privbench.report.stale import stale_notice
from privbench.run.check import check_records

BOARDS = sorted(p for p in (Path(__file__).parent.parent / "leaderboards").iterdir() if (p / "records").is_dir())


@pytest.mark.parametrize("board", BOARDS, ids=[b.name for b in BOARDS])
def test_regenerating_tables_changes_nothing(tmp_path, board: Path) -> None:
    records = list(iter_records(board / "records"))
    assert records and all(r["status"] in ("ok", "skipped") for _, r in records)
    stale = stale_notice(board)
    if stale:  # a declared-stale board names the commits its records come from; its tables must still regenerate
        commits = {str(r["provenance"]["git_commit"])[:7] for _, r in records}
        assert all(c in stale for c in commits), f"{board.name}/STALE.md must name commits {sorted(commits)}"
    else:
        problems = check_records(board)
        assert not problems, "\n".join(problems[:10])
    copy = tmp_path / board.name
    shutil.copytree(board, copy)
    shutil.rmtree(copy / "tables")
    shutil.rmtree(copy / "plots")
    write_report(copy)
    for committed in sorted((board / "tables").iterdir()):
        assert (copy / "tables" / committed.name).read_bytes() == committed.read_bytes(), committed.name
    assert sorted(p.name for p in (copy / "tables").iterdir()) == sorted(p.name for p in (board / "tables").iterdir())
    assert sorted(p.name for p in (copy / "plots").iterdir()) == sorted(p.name for p in (board / "plots").iterdir())


def test_there_is_a_quick_leaderboard() -> None:
    assert "quick" in [b.name for b in BOARDS]


@pytest.mark.parametrize("board", BOARDS, ids=[b.name for b in BOARDS])
def test_a_stale_board_shows_its_banner(board: Path) -> None:
    if not stale_notice(board):
        pytest.skip("fresh board")
    for page in sorted((board / "tables").glob("*.html")) + sorted((board / "tables").glob("*.md")):
        assert "Stale board." in page.read_text(), page.name
