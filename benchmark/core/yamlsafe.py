"""The one YAML entry point for files privbench reads: submission cards and suite files.

:func:`load_file` parses with :class:`StrictLoader`, a PyYAML ``SafeLoader`` that accepts plain data only: no
anchors or aliases (a few hundred bytes of nested aliases expand to gigabytes, "billion laughs"), no explicit tags
(``!!python/object``, ``!!str``, any ``!tag``), no duplicate keys (the reader of a file and the loader would disagree
on its value), a bounded nesting depth, and a bounded file size, checked before the text is parsed. Every refusal
is an :class:`~privbench.core.errors.InputError` (or the subclass the caller passes) naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, NoReturn

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent, ScalarEvent
from yaml.nodes import MappingNode, ScalarNode

from privbench.core.errors import InputError

#: Size limit of a submission card (``card.yaml``).
CARD_MAX_BYTES = 64 * 1024
#: Size limit of a suite file.
SUITE_MAX_BYTES = 1024 * 1024
#: Default nesting limit: collections and scalars, counted from the document's top node.
MAX_DEPTH = 32


class RefusedYAML(yaml.MarkedYAMLError):
    """YAML that :class:`StrictLoader` refuses (the mark says where)."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for plain data: refuses anchors, aliases, explicit tags, duplicate keys and nesting
    deeper than ``max_depth`` (flow collections are counted while scanning, so ``[[[[...`` stops early)."""

    def __init__(self, stream: str, max_depth: int = MAX_DEPTH) -> None:
        super().__init__(stream)
        self.max_depth = max_depth
        self.depth = 0

    def _refuse(self, problem: str, mark: Any) -> NoReturn:
        raise RefusedYAML(problem=problem, problem_mark=mark)

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 - PyYAML's signature
        if self.flow_level >= self.max_depth:
            self._refuse(f"nesting deeper than {self.max_depth} levels", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            self._refuse(f"alias *{event.anchor} is not allowed (write the value out)", event.start_mark)
        if isinstance(event, NodeEvent) and event.anchor is not None:
            self._refuse(f"anchor &{event.anchor} is not allowed (write the value out)", event.start_mark)
        if isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.tag is not None:
            self._refuse(f"explicit tag {event.tag!r} is not allowed (plain values only)", event.start_mark)
        if self.depth >= self.max_depth:
            self._refuse(f"nesting deeper than {self.max_depth} levels", event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                continue  # SafeConstructor refuses unhashable keys itself
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._refuse("merge key << is not allowed (write the keys out)", key_node.start_mark)
            key = self.construct_object(key_node)
            if key in seen:
                self._refuse(f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _where(label: str, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if isinstance(e, yaml.MarkedYAMLError):
        what = "; ".join(str(p) for p in (e.context, e.problem) if p) or "invalid YAML"
    else:
        what = str(e)
    return f"{label}{at}: {what}"


def load_text(text: str, label: str, *, max_depth: int = MAX_DEPTH, error: type[InputError] = InputError) -> Any:
    """Parse one YAML document with :class:`StrictLoader` (``None`` for an empty one); ``label`` starts every
    error message (e.g. ``"card path/card.yaml"``)."""
    loader = StrictLoader(text, max_depth=max_depth)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise error(_where(label, e)) from None
    finally:
        loader.dispose()


def load_file(path: Path, *, max_bytes: int, label: str | None = None, max_depth: int = MAX_DEPTH,
              error: type[InputError] = InputError) -> Any:
    """Read ``path`` (UTF-8, at most ``max_bytes`` bytes, refused before parsing when larger) and parse it with
    :func:`load_text`. ``label`` (default: the path) starts every error message."""
    path = Path(path)
    label = str(path) if label is None else label
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{label}: cannot read ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise error(f"{label}: larger than the limit of {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(f"{label}, line {line}: not UTF-8 text ({e.reason})") from None
    return load_text(text, label, max_depth=max_depth, error=error)
