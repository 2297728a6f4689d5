"""The typed row model of every leaderboard table: one place that knows units, direction and confidence intervals.

Tables are built from records as :class:`Table` objects and rendered three ways from them (Markdown, CSV,
static HTML: :mod:`privbench.report.render`); no renderer computes a number.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Optional

from privbench.core.stats import Interval


class Direction(str, enum.Enum):
    """How to read a column: which way is better for the *defender*."""

    HIGHER_BETTER = "higher-better"  # utility
    LOWER_BETTER = "lower-better"  # leakage, bitrate, cost
    NEUTRAL = "neutral"  # identifiers, counts


class Status(str, enum.Enum):
    """Why a cell shows what it shows."""

    OK = "ok"  # a number (with its CI)
    ATTACK_FAILED = "attack failed"  # the attack did not beat its prior on the reference defense: no privacy claim
    NOT_CLAIMED = "not claimed"  # the defense does not claim protection against this threat model
    NOT_APPLICABLE = "not applicable"  # no attack of this threat model applies to the release
    TEXT = "text"  # an identifier


#: A mean over seeds with its 95% confidence interval (the statistics' own type, :mod:`privbench.core.stats`).
Estimate = Interval


@dataclass(frozen=True)
class Cell:
    """One table cell: a value (``estimate`` or ``text``), its :class:`Status`, and an optional tooltip."""

    status: Status
    estimate: Optional[Estimate] = None
    text: str = ""
    title: str = ""  # longer explanation (HTML tooltip), e.g. the failed attack's measured advantage

    @staticmethod
    def of_text(text: str) -> "Cell":
        return Cell(Status.TEXT, text=text)

    @staticmethod
    def of(estimate: Optional[Estimate], title: str = "") -> "Cell":
        return Cell(Status.NOT_APPLICABLE, title=title) if estimate is None else Cell(Status.OK, estimate, title=title)

    def sort_key(self) -> float:
        """Numeric value for sorting: the estimate of an ``ok`` cell; NaN otherwise (failed attacks and unclaimed
        threat models sort with the empty cells, never among the gated numbers)."""
        return self.estimate.mean if self.estimate is not None and self.status is Status.OK else math.nan


@dataclass(frozen=True)
class Column:
    """A column: key (unique in its table), header title, unit (``""`` for unitless), direction, decimals."""

    key: str
    title: str
    unit: str = ""
    direction: Direction = Direction.NEUTRAL
    decimals: int = 3

    @property
    def header(self) -> str:
        return f"{self.title} ({self.unit})" if self.unit else self.title


@dataclass(frozen=True)
class Row:
    """One row: a cell per column key, plus thumbnails (``(caption, PNG data URI)``) shown in the HTML page."""

    cells: dict[str, Cell]
    thumbnails: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Table:
    """A titled table of rows over columns, with notes (Markdown) printed under it."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        keys = [c.key for c in self.columns]
        if len(set(keys)) != len(keys):
            raise ValueError(f"table {self.key}: duplicate column keys")
        for i, row in enumerate(self.rows):
            unknown = set(row.cells) - set(keys)
            if unknown:
                raise ValueError(f"table {self.key} row {i}: cells for unknown columns {sorted(unknown)}")


@dataclass(frozen=True)
class Board:
    """Everything one suite's report shows: a heading, intro paragraphs and tables, in order; ``stale`` is the
    board's own declaration that its records predate the code (``STALE.md``, shown as a banner), or ``""``."""

    suite: str
    intro: tuple[str, ...]
    tables: tuple[Table, ...]
    stale: str = ""
