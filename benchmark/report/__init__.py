"""Reports generated from records only: tables (Markdown, CSV, HTML) and plots.

A report is a pure function of its inputs (the records, the sample and unit artifacts they name, a board's
``video_case/``) and of the report code, so ``write_report`` skips the work when neither changed since the last
report in that directory: ``.report-digest`` holds their SHA-256 and that of every file written; a missing or
changed output, a changed input, an edited report module or template, or other rendering libraries regenerate
everything.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing as mp
import os
from pathlib import Path

from privbench.core.atomic import atomic_write_text

DIGEST = ".report-digest"


def _inputs(out_dir: Path) -> list[Path]:
    files = sorted((out_dir / "records").glob("*.json"))
    for kind in ("samples", "units"):
        files += sorted((out_dir / kind).glob("*.npz"))
    case = out_dir / "video_case"
    if case.is_dir():
        files += sorted(p for p in case.iterdir() if p.is_file())
    if (out_dir / "STALE.md").is_file():
        files.append(out_dir / "STALE.md")
    return files


def report_digest(out_dir: Path) -> str:
    """SHA-256 of everything a report of ``out_dir`` depends on: input file names and bytes, the report code and
    templates, and the versions of the libraries that render it."""
    from privbench import __version__
    from privbench.core.codehash import closure_hash, library_versions

    h = hashlib.sha256(closure_hash("privbench.report.tables", "privbench.report.plots").encode())
    h.update(json.dumps([__version__, library_versions(("pandas", "numpy", "scipy", "matplotlib", "jinja2",
                                                         "pillow"))], sort_keys=True).encode())
    for template in sorted((Path(__file__).parent / "templates").glob("*")):
        h.update(template.name.encode() + b"\0" + hashlib.sha256(template.read_bytes()).digest())
    for path in _inputs(Path(out_dir)):
        h.update(path.relative_to(out_dir).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_plots(out_dir: Path) -> list[Path]:
    """The plots, imported here so that a parent handing them to a child never imports matplotlib itself."""
    from privbench.report.plots import write_plots

    return write_plots(out_dir)


def write_report(out_dir: Path, force: bool = False, parallel: bool = False) -> list[Path]:
    """Write ``tables/`` and ``plots/`` of ``out_dir`` from its records; when nothing they depend on changed since
    the last report (and every file it wrote is still there), return those files without rewriting them.

    ``parallel``: draw the plots in a spawned child while this process builds the tables (the command line's
    choice on a machine with 2+ cores; the child pays its own pandas and matplotlib imports, about a second of CPU,
    so a process that reports often, like the tests, keeps the default)."""
    out_dir = Path(out_dir)
    digest = report_digest(out_dir)
    stamp = out_dir / DIGEST
    if not force and stamp.is_file():
        try:
            last = json.loads(stamp.read_text())
        except (OSError, ValueError):
            last = {}
        files = last.get("files", {})
        if last.get("digest") == digest and files and all(
                (out_dir / f).is_file() and _sha256(out_dir / f) == sha for f, sha in files.items()):
            return [out_dir / f for f in files]
    from privbench.report.tables import write_tables

    if parallel and (os.cpu_count() or 1) >= 2:
        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            plots = pool.submit(_write_plots, out_dir)
            written = write_tables(out_dir) + plots.result()
    else:
        written = write_tables(out_dir) + _write_plots(out_dir)
    files = {p.relative_to(out_dir).as_posix(): _sha256(p) for p in written}
    atomic_write_text(stamp, json.dumps({"digest": digest, "files": files}, indent=1) + "\n")
    return written
