"""Committed leaderboards are generated, never hand-edited: regenerating their tables from the committed records
changes nothing, every committed record validates, and every record comes from this checkout's code at a clean
tree (``privbench report --check``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmark.check import check_records
from benchmark.records import iter_records
from benchmark.report import write_report

BOARDS = sorted(p for p in (Path(__file__).parent.parent / "leaderboards").iterdir() if (p / "records").is_dir())


@pytest.mark.parametrize("board", BOARDS, ids=[b.name for b in BOARDS])
def test_regenerating_tables_changes_nothing(tmp_path, board: Path) -> None:
    records = list(iter_records(board / "records"))
    assert records and all(r["status"] in ("ok", "skipped") for _, r in records)
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
