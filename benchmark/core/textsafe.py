"""Escaping of untrusted text (file names, card fields, submitted descriptions) for every text output.

One place for it (docs/SUBMITTING.md and docs/AUDIT.md, threat models): a release's file names and a
submission's card reach ``report.md``, ``flagged.csv``, the leaderboards' Markdown and CSV. HTML goes through
jinja2's autoescape instead.
"""

from __future__ import annotations

import re
from typing import Any

#: C0/C1 controls but newline and tab, and the Unicode bidirectional overrides and isolates (which reorder what a
#: terminal or a page shows: "Trojan Source").
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?%?$")
#: What a spreadsheet reads as the start of a formula (OWASP "CSV injection").
_HTML_START = re.compile(r"<(?=[A-Za-z/!?])")  # a tag, comment, declaration, instruction or autolink
_ENTITY_START = re.compile(r"&(?=[A-Za-z#])")  # a named or numeric character reference
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """``text`` without control characters other than newlines and tabs, nor bidirectional overrides (no terminal
    escape or reordering reaches a console)."""
    return _CONTROL.sub("?", text)


def one_line(text: str) -> str:
    """:func:`printable` on one line: line breaks shown as ``⏎`` (untrusted text cannot print a line that looks
    like the program's own)."""
    return " ⏎ ".join(printable(text).splitlines())


def markdown_cell(text: Any) -> str:
    """``text`` as one Markdown table cell or inline run: newlines become spaces; ``\\`` and ``|`` are
    backslash-escaped (so ``\\|`` cannot un-escape a pipe); ``<`` where it could open raw HTML or an autolink and
    ``&`` where it could start a character reference become entities; ``](`` cannot close a link or image. Text
    that cannot form any of these is left as it is."""
    s = printable(str(text)).replace("\\", "\\\\")
    s = _ENTITY_START.sub("&amp;", s)
    s = _HTML_START.sub("&lt;", s)
    s = " ".join(s.splitlines())
    return s.replace("|", r"\|").replace("](", r"]\(")


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet evaluates: text starting with ``= + - @``, a tab or a carriage return gets a
    leading ``'``; numbers (and text that is a plain number, such as ``-0.25``) are left as they are."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START) or _NUMBER.match(value):
        return value
    return "'" + value
