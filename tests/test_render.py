"""The three renderings of the row model (Markdown, CSV, HTML): formats, escaping, determinism, CSV round-trip.

The HTML page's behaviour in a real browser (sorting, thumbnails) is tested in ``test_html_browser.py``.
"""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest

from privbench.report.render import format_estimate, to_csv, to_html, to_markdown
from privbench.report.rows import Board, Cell, Column, Direction, Estimate, Row, Status, Table

PNG = ("data:image/png;base64,"
       "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")  # 1x1 black


def make_table(thumbnail: str = PNG) -> Table:
    columns = (
        Column("defense", "defense"),
        Column("utility", "utility", "%", Direction.HIGHER_BETTER, decimals=1),
        Column("leak", "linkage advantage", direction=Direction.LOWER_BETTER),
    )
    rows = (
        Row({"defense": Cell.of_text("blur|σ=2 <script>alert(1)</script>"),
             "utility": Cell.of(Estimate(91.25, 90.25, 92.25, 3)),
             "leak": Cell.of(Estimate(0.4, 0.35, 0.5, 3), title="strongest attack: knn")},
            thumbnails=(("blur sample 0", thumbnail),)),
        Row({"defense": Cell.of_text("dp-sgd"),
             "utility": Cell.of(Estimate(60.0, 58.0, 62.0, 1)),
             "leak": Cell(Status.ATTACK_FAILED, Estimate(0.012, 0.002, 0.022, 3), title="advantage 0.012 <= prior")}),
        Row({"defense": Cell.of_text("mask"),
             "utility": Cell.of(Estimate(75.0, 74.0, 76.0, 2)),
             "leak": Cell(Status.NOT_CLAIMED, Estimate(0.5, 0.45, 0.55, 2))}),
        Row({"defense": Cell.of_text("none"),
             "utility": Cell.of(Estimate(95.0, 94.5, 95.5, 3)),
             "leak": Cell.of(None)}),
        Row({"defense": Cell.of_text("pixelate"), "leak": Cell(Status.NOT_CLAIMED)}),  # utility missing
    )
    return Table("main", "Utility vs `linkage`", columns, rows, notes=("First note with `code`.", "Second note."))


def make_board(thumbnail: str = PNG) -> Board:
    return Board("quick", ("Intro with `privbench report` & <em>no</em> HTML.",), (make_table(thumbnail),))


# ---------------------------------------------------------------------------------------------------------- Markdown


def test_markdown_table() -> None:
    assert to_markdown(make_table()) == (
        "| defense | utility (%) | linkage advantage |\n"
        "|---|---:|---:|\n"
        r"| blur\|σ=2 &lt;script>alert(1)&lt;/script> | 91.2 ± 1.0 | 0.400 [0.350, 0.500] |" "\n"
        "| dp-sgd | 60.0 ± 2.0 | attack failed (0.012 ± 0.010) |\n"
        "| mask | 75.0 ± 1.0 | not claimed (0.500 ± 0.050) |\n"
        "| none | 95.0 ± 0.5 | — |\n"
        "| pixelate |  | not claimed |\n"
        "\n"
        "First note with `code`.\n"
        "\n"
        "Second note.\n"
    )


def test_markdown_has_no_trailing_spaces() -> None:
    table = make_table()
    table = Table(table.key, table.title, table.columns, table.rows, notes=("trailing  ", "two\nlines "))
    assert not any(line != line.rstrip() for line in to_markdown(table).splitlines())


@pytest.mark.parametrize(("estimate", "decimals", "expected"), [
    (Estimate(0.5, 0.4, 0.6, 3), 3, "0.500 ± 0.100"),
    (Estimate(0.5, 0.4, 0.7, 3), 2, "0.50 [0.40, 0.70]"),
    (Estimate(1e6, 1e6 - 1, 1e6 + 1 + 1e-3, 3), 0, "1000000 ± 1"),  # within the relative tolerance
    (Estimate(2.0, 2.0, 2.0, 1), 1, "2.0 ± 0.0"),
])
def test_estimate_format(estimate: Estimate, decimals: int, expected: str) -> None:
    assert format_estimate(estimate, decimals) == expected


# --------------------------------------------------------------------------------------------------------------- CSV


def test_csv_columns_and_values() -> None:
    text = to_csv(make_table())
    assert "\r" not in text and text.endswith("\n")
    header = text.splitlines()[0].split(",")
    assert header == ["defense",
                      "utility", "utility_lo", "utility_hi", "utility_status", "utility_seeds",
                      "leak", "leak_lo", "leak_hi", "leak_status", "leak_seeds"]
    assert text.splitlines()[5] == "pixelate,,,,,,,,,not claimed,"


def test_csv_round_trip_through_pandas() -> None:
    table = make_table()
    df = pd.read_csv(io.StringIO(to_csv(table)))
    assert list(df.defense) == [r.cells["defense"].text for r in table.rows]
    for key in ("utility", "leak"):
        for row, (_, got) in zip(table.rows, df.iterrows()):
            cell = row.cells.get(key)
            status = got[f"{key}_status"]
            assert (None if pd.isna(status) else status) == (cell.status.value if cell else None)
            if cell is not None and cell.estimate is not None:
                est = cell.estimate
                assert (got[key], got[f"{key}_lo"], got[f"{key}_hi"]) == pytest.approx((est.mean, est.lo, est.hi),
                                                                                        rel=1e-6)
                assert got[f"{key}_seeds"] == est.seeds
            else:
                assert pd.isna(got[key]) and pd.isna(got[f"{key}_lo"]) and pd.isna(got[f"{key}_seeds"])


def test_csv_floats_use_six_significant_digits() -> None:
    table = Table("t", "t", (Column("x", "x"),), (Row({"x": Cell.of(Estimate(1 / 3, 0.25, 0.5, 2))}),))
    assert to_csv(table).splitlines()[1] == "0.333333,0.25,0.5,ok,2"


# -------------------------------------------------------------------------------------------------------------- HTML


def test_html_is_deterministic() -> None:
    assert to_html(make_board()) == to_html(make_board())
    assert to_html(make_board(), title="T") == to_html(make_board(), title="T")


def test_html_escapes_text() -> None:
    html = to_html(make_board())
    assert "<script>alert(1)" not in html
    assert "blur|σ=2 &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<p>Intro with <code>privbench report</code> &amp; &lt;em&gt;no&lt;/em&gt; HTML.</p>" in html
    assert "<h2>Utility vs <code>linkage</code></h2>" in html
    assert 'title="advantage 0.012 &lt;= prior' in html


def test_html_structure() -> None:
    html = to_html(make_board(), title="privbench quick")
    assert "<title>privbench quick</title>" in html
    assert '<table class="board" id="main">' in html
    assert re.findall(r'data-row="(\d+)"', html) == ["0", "1", "2", "3", "4"]
    assert '<th scope="col" data-type="text"' in html
    heads = re.findall(r'<th scope="col" data-type="num" tabindex="0" title="([^"]*)">([^<]*)</th>', html)
    assert [h for _, h in heads] == ["utility (%)", "linkage advantage"]
    assert "unit: %; higher is better for the defender" in heads[0][0]
    assert "unitless; lower is better for the defender" in heads[1][0]
    assert ('<td class="num attack-failed" data-sort="NaN" title="advantage 0.012 &lt;= prior\n'
            'mean of 3 seeds; 95% CI [0.002, 0.022]">'
            'attack failed <span class="aside">0.012 ± 0.010</span></td>') in html
    assert '<td class="num not-claimed" data-sort="NaN"' in html
    assert 'not claimed <span class="aside">0.500 ± 0.050</span></td>' in html
    assert '<td class="num not-claimed" data-sort="NaN">not claimed</td>' in html
    assert '<td class="num not-applicable" data-sort="NaN">—</td>' in html
    assert '<td class="num missing" data-sort="NaN"></td>' in html
    assert f'<img src="{PNG}" alt="blur sample 0" title="blur sample 0">' in html
    assert html.count('<td class="samples">') == 5 and ">samples</th>" in html
    assert "<p>First note with <code>code</code>.</p>" in html


def test_html_without_thumbnails_has_no_samples_column() -> None:
    table = make_table()
    bare = Table(table.key, table.title, table.columns, tuple(Row(r.cells) for r in table.rows))
    html = to_html(Board("quick", (), (bare,)))
    assert ">samples</th>" not in html and '<td class="samples">' not in html and "<img" not in html


def test_html_fetches_nothing() -> None:
    html = to_html(make_board())
    assert re.findall(r'(?:src|href)="(?!data:)', html) == []
    assert "default-src 'none'" in html  # the CSP also forbids any fetch in the browser
    with pytest.raises(ValueError, match="data:image"):
        to_html(make_board(thumbnail="https://example.org/x.png"))


def test_template_ships_as_package_data() -> None:
    from importlib.resources import files

    assert (files("privbench.report") / "templates" / "board.html.j2").is_file()


def test_privacy_utility_points_are_per_threat_model_claimed_only_and_failed_attacks_are_unknown() -> None:
    """Issue 25: the plot no longer mixes threat models or draws "attack failed" as private. On the committed quick
    board: dp-sgd has no point for malicious training code (it does not claim it), bn-synthetic's model-holder
    point is "unknown" (its attacks failed), and each measured point lies inside its own CI."""
    import math
    from pathlib import Path

    from privbench.report.frame import load_frame
    from privbench.report.plots import threat_points
    from privbench.report.tables import build_board

    board = Path(__file__).resolve().parents[1] / "leaderboards" / "quick"
    df = load_frame(board)
    main = next(t for t in build_board(board, "quick", df).tables if t.key == "main-mnist5k")
    points = threat_points(main, df[(df.status == "ok") & (df.dataset == "mnist5k")])
    by = {threat: {name: (status, y, ci) for name, _, y, status, ci in pts} for threat, pts in points.items()}
    assert not any(n.startswith("dp-sgd") for n in by["malicious training code"])
    assert by["holder of the released model"]["bn-synthetic"][0] == "unknown"
    assert math.isnan(by["holder of the released model"]["bn-synthetic"][1])
    assert "dp-sgd noise_multiplier=0" not in by["honest-but-curious server seeing shared updates"]  # no claim
    for threat, pts in by.items():
        for name, (status, y, (_, _, lo, hi)) in pts.items():
            if status == "ok":
                assert lo - 1e-9 <= y <= hi + 1e-9, (threat, name)
