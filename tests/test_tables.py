"""The leaderboard's gating logic on hand-made records: an attack that does not beat its prior on the reference
reads "attack failed" everywhere, an unclaimed threat model reads "not claimed", the reference always shows
numbers, and the worst cell is the strongest *competent* attack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from privbench.report.intervals import competence
from privbench.report.rows import Status
from privbench.report.tables import main_table


def _row(defense: str, attack: str, threat: str, seed: int, advantage: float, claims: str = "") -> dict:
    return {"dataset": "d", "defense": defense, "config": defense, "defense_params": json.dumps({}),
            "strength": np.nan, "reference": "none", "attack_name": attack, "attack": attack, "threat": threat,
            "claims": claims, "seed": seed, "advantage": advantage, "advantage_se": 0.01, "utility": 0.9,
            "drop": 0.0 if defense == "none" else 0.1, "test_size": 1000, "recipe_reference": None,
            "bits_per_image": np.nan, "pixels": 784, "defense_seconds": 1.0, "samples": None,
            "statistic": "ssim", "raw": 0.5, "prior": 0.1}


def _frame() -> pd.DataFrame:
    rows = []
    for s in range(3):
        rows += [_row("none", "strong", "observer", s, 0.9 + 0.01 * s), _row("none", "weak", "observer", s, -0.01 * s),
                 _row("none", "blind", "linker", s, 0.002 * (s - 1))]
        rows += [_row("blur", "strong", "observer", s, 0.3 + 0.01 * s, claims="observer,linker"),
                 _row("blur", "weak", "observer", s, 0.6, claims="observer,linker"),  # incompetent: must not count
                 _row("blur", "blind", "linker", s, 0.01, claims="observer,linker")]
        rows += [_row("pixelate", "strong", "observer", s, 0.5, claims="linker")]
    return pd.DataFrame(rows)


def test_gates_claims_and_the_reference(tmp_path: Path) -> None:
    ok = _frame()
    comp = competence(ok)
    assert comp[("d", "strong")].competent and not comp[("d", "weak")].competent
    assert not comp[("d", "blind")].competent
    table = main_table(tmp_path, "d", ok, comp)
    cells = {r.cells["defense"].text: r.cells for r in table.rows}
    assert [r.cells["defense"].text for r in table.rows][0] == "none"  # the reference first
    # the strongest *competent* observer attack on blur is 'strong' (0.31), not the incompetent 'weak' (0.6)
    assert cells["blur"]["observer"].status is Status.OK
    assert abs(cells["blur"]["observer"].estimate.mean - 0.31) < 1e-9
    assert cells["blur"]["linker"].status is Status.ATTACK_FAILED  # no competent linker: no privacy claim
    assert cells["pixelate"]["observer"].status is Status.NOT_CLAIMED
    assert cells["none"]["observer"].status is Status.OK  # the reference claims nothing but shows numbers
    assert cells["none"]["drop"].estimate.hi == 0.0


def test_report_is_skipped_when_nothing_it_depends_on_changed(tmp_path) -> None:
    import shutil

    from privbench.report import DIGEST, write_report

    board = tmp_path / "gradients"
    shutil.copytree(Path(__file__).parent.parent / "leaderboards" / "gradients", board)
    first = write_report(board, force=True)
    stamps = {p: p.stat().st_mtime_ns for p in first}
    assert write_report(board) == first and {p: p.stat().st_mtime_ns for p in first} == stamps  # untouched
    record = sorted((board / "records").glob("*.json"))[0]
    record.write_text(record.read_text() + "\n")  # same record, other bytes: an input changed
    again = write_report(board)
    assert again == first and any(p.stat().st_mtime_ns != stamps[p] for p in again)
    first[0].unlink()  # a missing output regenerates too
    assert write_report(board)[0].is_file() and (board / DIGEST).is_file()
