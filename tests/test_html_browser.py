"""The static leaderboard page in a real headless browser: header clicks sort the rows, statuses show, thumbnails load.

Drives Debian's ``chromium`` (or ``$PRIVBENCH_CHROMIUM``) through playwright by explicit executable path; playwright's
own browser downloads are never used. Skips when playwright or chromium is missing, unless
``PRIVBENCH_REQUIRE_BROWSER=1`` (set by ``.ci/run``), in which case it fails so CI cannot skip it silently.
"""

from __future__ import annotations

import base64
import io
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from privbench.report.render import to_html
from privbench.report.rows import Board, Cell, Column, Direction, Estimate, Row, Status, Table

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

INSTALL_HINT = ("install Debian's chromium (`apt-get install -y --no-install-recommends chromium`, or point "
                "PRIVBENCH_CHROMIUM at a Chrome/Chromium executable) and playwright (`pip install -e '.[test]'`); "
                "never `playwright install`")


def _unavailable(reason: str) -> None:
    if os.environ.get("PRIVBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PRIVBENCH_REQUIRE_BROWSER=1 but {reason}: {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"browser test skipped, {reason} ({INSTALL_HINT}; set PRIVBENCH_REQUIRE_BROWSER=1 to fail instead)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    executable = os.environ.get("PRIVBENCH_CHROMIUM") or shutil.which("chromium")
    if not executable:
        _unavailable("no `chromium` executable on PATH")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _png_data_uri() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


NAMES = ("Pixelate", "none", "blur", "DP-SGD", "mask")  # mixed case: the text sort must be case-insensitive
UTILITY = (0.80, 0.95, 0.85, 0.60, 0.75)
LEAK = (0.30, math.nan, 0.15, 0.02, 0.50)  # none: n/a (not last, to test it sorts last); DP-SGD: attack failed
#: What sorting sees: only gated numbers; "attack failed" (DP-SGD) and "not claimed" (mask) sort with the empty cells.
LEAK_SORT = (0.30, math.nan, 0.15, math.nan, math.nan)


def _board() -> Board:
    columns = (Column("defense", "defense"),
               Column("utility", "utility", "accuracy", Direction.HIGHER_BETTER),
               Column("leak", "leakage", direction=Direction.LOWER_BETTER))
    rows = []
    for name, util, leak in zip(NAMES, UTILITY, LEAK):
        estimate = None if math.isnan(leak) else Estimate(leak, leak - 0.01, leak + 0.01, 3)
        leak_cell = {"DP-SGD": Cell(Status.ATTACK_FAILED, estimate, title="did not beat its prior"),
                     "mask": Cell(Status.NOT_CLAIMED, estimate)}.get(name, Cell.of(estimate))
        rows.append(Row({"defense": Cell.of_text(name), "utility": Cell.of(Estimate(util, util - 0.02, util + 0.02, 3)),
                         "leak": leak_cell},
                        thumbnails=(("pixelated face", _png_data_uri()),) if name == "Pixelate" else ()))
    return Board("browser", ("A `test` board.",), (Table("main", "Main", tuple(columns), tuple(rows)),))


def _open(browser: Browser, tmp_path: Path) -> tuple[Page, list[str]]:
    """The rendered board opened from disk, and a list collecting JS errors, CSP violations and any other fetch."""
    path = tmp_path / "board.html"
    path.write_text(to_html(_board()), encoding="utf-8")
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    page.on("request", lambda req: req.url.startswith(("file:", "data:")) or problems.append(f"fetch {req.url}"))
    page.goto(path.as_uri())
    return page, problems


def _order(page: Page) -> list[str]:
    return page.eval_on_selector_all("#main tbody tr", "trs => trs.map(tr => tr.cells[0].textContent.trim())")


def _expected(values: tuple[float, ...], descending: bool = False) -> list[str]:
    """Names ordered by ``values`` (NaN last in both directions)."""
    present = sorted((v, n) for n, v in zip(NAMES, values) if not math.isnan(v))
    missing = [n for n, v in zip(NAMES, values) if math.isnan(v)]
    return [n for _, n in (present[::-1] if descending else present)] + missing


def test_header_clicks_sort_rows(browser: Browser, tmp_path: Path) -> None:
    page, problems = _open(browser, tmp_path)
    assert _order(page) == list(NAMES)
    header = page.locator("#main thead th", has_text="utility")
    header.click()
    assert _order(page) == _expected(UTILITY)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _order(page) == _expected(UTILITY, descending=True)
    assert header.get_attribute("aria-sort") == "descending"

    leak = page.locator("#main thead th", has_text="leakage")
    leak.click()
    assert _order(page) == _expected(LEAK_SORT) == ["blur", "Pixelate", "none", "DP-SGD", "mask"]
    keys = page.eval_on_selector_all("#main tbody tr", "trs => trs.map(tr => parseFloat(tr.cells[2].dataset.sort))")
    assert keys[:2] == sorted(keys[:2]) and all(math.isnan(k) for k in keys[2:])
    leak.click()
    assert _order(page) == _expected(LEAK_SORT, descending=True)  # non-numbers stay last
    assert header.get_attribute("aria-sort") is None

    page.locator("#main thead th", has_text="defense").click()
    assert _order(page) == sorted(NAMES, key=str.casefold)
    page.locator("#main thead th", has_text="defense").click()
    assert _order(page) == sorted(NAMES, key=str.casefold, reverse=True)
    assert problems == []
    page.close()


def test_statuses_tooltips_and_thumbnail(browser: Browser, tmp_path: Path) -> None:
    page, problems = _open(browser, tmp_path)
    failed = page.locator("#main td.attack-failed")
    assert failed.count() == 1
    assert failed.inner_text().startswith("attack failed")
    assert failed.locator(".aside").inner_text() == "0.020 ± 0.010"
    assert "did not beat its prior" in failed.get_attribute("title")
    smaller = ("e => parseFloat(getComputedStyle(e.querySelector('.aside')).fontSize)"
               " < parseFloat(getComputedStyle(e).fontSize)")
    assert failed.evaluate(smaller)
    claimed = page.locator("#main td.not-claimed")
    assert claimed.count() == 1 and claimed.inner_text().startswith("not claimed")
    assert page.locator("#main td.not-applicable").inner_text() == "—"
    assert "lower is better for the defender" in page.locator("#main th", has_text="leakage").get_attribute("title")

    image = page.locator("#main td.samples img")
    assert image.count() == 1 and image.get_attribute("alt") == "pixelated face"
    page.wait_for_function("() => Array.from(document.images).every(img => img.complete)")
    assert image.evaluate("img => img.naturalWidth") == 6
    assert problems == []
    page.close()
