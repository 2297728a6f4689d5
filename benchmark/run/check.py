"""``privbench report --check``: records must come from the checkout's code, at a clean tree, and no defense may
beat the board's reference beyond its CI (:func:`board_problems`).

A record is stale when the code that would produce its cell today (its defense's and attack's import closures,
the core's evaluation and scoring code, the numeric libraries' versions) hashes differently from what the record
carries, and dirty when it was produced from a tree with uncommitted code changes.
"""

from __future__ import annotations

from pathlib import Path

from privbench.core.errors import InputError
from privbench.core.records import read_record
from privbench.run.plan import code_versions


def check_records(directory: Path) -> list[str]:
    """One problem line per stale, dirty or unverifiable record under ``directory/records`` (empty = all good)."""
    problems: list[str] = []
    current: dict[tuple[str, str, str], dict[str, str]] = {}
    records = Path(directory) / "records"
    if not records.is_dir():
        raise InputError(f"{records}: no records directory")
    for path in sorted(records.glob("*.json")):
        try:
            rec = read_record(path)
        except InputError as e:
            problems.append(f"{path.name}: invalid: {e}")
            continue
        ids = (rec["defense"]["id"], rec["attack"]["id"], rec.get("reference", "none"))
        try:
            now = current.setdefault(ids, code_versions(*ids))
        except InputError as e:
            problems.append(f"{path.name}: cannot verify ({e}); load the plugin that registers it with --plugin")
            continue
        prov = rec["provenance"]
        changed = [part for part in now if prov["code"].get(part) != now[part]]
        if changed:
            problems.append(f"{path.name}: stale: {', '.join(changed)} code differs from this checkout's")
        commit = str(prov["git_commit"])
        if commit.endswith("+dirty") or commit == "unknown":
            problems.append(f"{path.name}: produced by a {'dirty' if commit != 'unknown' else 'non-git'} tree "
                            f"({commit})")
    return problems


def board_problems(directory: Path) -> list[str]:
    """:func:`check_records`, then every defense config whose utility is above the reference's beyond its CI
    (``privbench.report.intervals.utility_above_reference``): a board whose reference is not its strongest
    baseline fails the check too."""
    from privbench.report.frame import load_frame
    from privbench.report.intervals import utility_above_reference

    problems = check_records(directory)
    df = load_frame(Path(directory))
    return problems + utility_above_reference(df[df.status == "ok"])
