"""Typed registries filled by decorators (one per plugin kind), and plugin loading.

Every plugin package, built-in or third-party, registers through the entry-point groups ``privbench.defenses`` /
``privbench.attacks`` (the built-ins are declared in ``pyproject.toml``) or a Python file given on the CLI
(``--plugin FILE``). The core never imports a plugin package by name. A duplicate id raises.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Generic, Iterator, TypeVar

from .errors import InputError

if TYPE_CHECKING:
    from .contracts import Attack, Defense

T = TypeVar("T")
_ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: Entry-point groups through which plugin packages register (built-ins included).
PLUGIN_GROUPS = ("privbench.defenses", "privbench.attacks")


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


DEFENSES: "Registry[type[Defense]]" = Registry("defense")
ATTACKS: "Registry[type[Attack]]" = Registry("attack")


def plugin_modules() -> list[str]:
    """Module names of the installed plugin packages (entry points of :data:`PLUGIN_GROUPS`)."""
    return sorted({ep.module for group in PLUGIN_GROUPS for ep in entry_points(group=group)})


def load_builtins() -> None:
    """Import the core's own registries and every installed plugin package (idempotent)."""
    importlib.import_module("benchmark.data")
    importlib.import_module("benchmark.metrics")
    importlib.import_module("benchmark.models")
    for group in PLUGIN_GROUPS:
        for ep in entry_points(group=group):
            try:
                ep.load()
            except (ImportError, KeyError, ValueError) as e:
                raise InputError(f"plugin entry point {ep.name} = {ep.value} (group {group}) failed to load: "
                                 f"{type(e).__name__}: {e}") from None


def plugin_module_name(path: Path) -> str:
    """The stable module name a plugin file is imported under (so code hashes and pickling can find it)."""
    resolved = Path(path).resolve()
    return f"privbench_plugin_{re.sub(r'[^0-9a-zA-Z_]', '_', resolved.stem)}_" \
           f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


def load_plugin_file(path: str | Path) -> str:
    """Import a Python file whose decorators register extra plugins; returns its module name (idempotent)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"plugin file {path} does not exist")
    name = plugin_module_name(path)
    if name in sys.modules:
        return name
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise InputError(f"plugin file {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered before executing, so classes defined in it can be found by name
    try:
        spec.loader.exec_module(module)
    except InputError:
        del sys.modules[name]
        raise
    except Exception as e:
        del sys.modules[name]
        raise InputError(f"plugin file {path} failed to import: {type(e).__name__}: {e}") from None
    return name


def load_plugins(files: tuple[str, ...] = ()) -> None:
    """Built-ins, entry points, then ``files`` (``--plugin``): what every process of a run loads."""
    load_builtins()
    for f in files:
        load_plugin_file(f)
