"""The audit's output directory: what may be written over (an earlier audit report, marked by :data:`MARKER`) and
what never (an input, or a directory the audit did not write)."""

from __future__ import annotations

from pathlib import Path

from privbench.core.errors import InputError

#: File that marks a directory as an audit report (so a later audit may replace it).
MARKER = ".privbench-audit"


def check_out(out: Path, inputs: list[Path]) -> None:
    """Refuse an output directory that is, contains or lies inside an input, or that exists without being an earlier
    audit report (it would be replaced)."""
    o = Path(out).resolve()
    for d in inputs:
        i = Path(d).resolve()
        if o == i or o.is_relative_to(i) or i.is_relative_to(o):
            raise InputError(f"--out {out}: overlaps the input directory {d}; write the report elsewhere")
    if o.exists() and not (o / MARKER).is_file():
        if not o.is_dir() or any(o.iterdir()):
            raise InputError(f"--out {out}: exists and is not an earlier privbench audit report; refusing to replace "
                             "it (choose a new or empty directory)")
