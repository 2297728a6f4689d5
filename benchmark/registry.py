"""Typed registries filled by decorators (one per plugin kind).

Built-in plugins register when their package is imported; third-party plugins register through the entry-point
groups ``privbench.defenses`` / ``privbench.attacks`` or a Python file given on the CLI (``--plugin FILE``).
A duplicate id raises.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")
_ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class Registry(Generic[T]):
    """A mapping from stable lowercase-hyphenated ids to plugin classes or factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, id: str) -> Callable[[T], T]:
        """Decorator: ``@DEFENSES.register("blur")``. Raises ``KeyError`` on a duplicate or malformed id."""
        if not _ID_RE.match(id):
            raise ValueError(f"{self.kind} id {id!r} must be lowercase and hyphenated, e.g. 'split-ae'")

        def deco(obj: T) -> T:
            if id in self._items:
                raise KeyError(f"duplicate {self.kind} id {id!r}: already registered by {self._items[id]!r}")
            self._items[id] = obj
            try:
                setattr(obj, "id", id)
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get(self, id: str) -> T:
        if id not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise InputError(f"unknown {self.kind} id {id!r}; registered: {known}")
        return self._items[id]

    def __contains__(self, id: object) -> bool:
        return id in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __len__(self) -> int:
        return len(self._items)


def load_builtins() -> None:
    """Import the built-in plugin packages and any installed entry points (idempotent)."""
    importlib.import_module("benchmark.data")
    importlib.import_module("benchmark.metrics")
    importlib.import_module("defenses")
    importlib.import_module("attacks")
    for group in ("privbench.defenses", "privbench.attacks"):
        for ep in entry_points(group=group):
            ep.load()


def load_plugin_file(path: str | Path) -> None:
    """Import a Python file whose decorators register extra plugins."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"plugin file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"privbench_plugin_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
