"""Reports generated from records only: tables (Markdown, CSV) and plots."""

from __future__ import annotations

from pathlib import Path


def write_report(out_dir: Path) -> list[Path]:
    from .tables import write_tables
    from .plots import write_plots

    return write_tables(out_dir) + write_plots(out_dir)
