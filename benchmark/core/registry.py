"""Typed registries filled by decorators, one per plugin kind: a leaf of the core that imports nothing of the
project but its errors. Plugins fill them when they are imported (:mod:`privbench.run.plugins` loads them); the core
looks ids up here and never imports a plugin by name. A duplicate id raises."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

from privbench.core.errors import InputError

if TYPE_CHECKING:
    from privbench.core.contracts import Attack, Defense

T = TypeVar("T")
_ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: The longest plugin id (a submission's defense ids are checked against the same rule on the trusted side).
MAX_ID_LENGTH = 64


def valid_id(id: object) -> bool:
    """Whether ``id`` is a plugin id: lowercase alphanumerics joined by single hyphens, at most 64 characters."""
    return isinstance(id, str) and len(id) <= MAX_ID_LENGTH and _ID_RE.fullmatch(id) is not None  # no "blur\n"


class Registry(Generic[T]):
    """A mapping from stable lowercase-hyphenated ids to plugin classes or factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, id: str) -> Callable[[T], T]:
        """Decorator: ``@DEFENSES.register("blur")``. Raises ``KeyError`` on a duplicate or malformed id."""
        if not valid_id(id):
            raise ValueError(f"{self.kind} id {id!r} must be lowercase and hyphenated (at most {MAX_ID_LENGTH} "
                             "characters), e.g. 'split-ae'")

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
#: Dataset loaders: ``fn(options, generator) -> Pool`` (:mod:`privbench.data`).
DATASETS: "Registry[Callable[..., Any]]" = Registry("dataset")
#: Task-model builders: ``fn(in_channels, num_classes, **kwargs) -> SplitModel`` (:mod:`privbench.models`).
MODELS: "Registry[Callable[..., Any]]" = Registry("model")
#: Image metrics (:class:`privbench.metrics.image.MetricSpec`).
METRICS: "Registry[Any]" = Registry("metric")
