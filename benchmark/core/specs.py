"""Frozen specifications of a suite (what a run is asked to do), built at the CLI edge by
:mod:`privbench.run.config` from YAML and passed everywhere else: split sizes, plugin configurations, the suite."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from privbench.core.contracts import TaskConfig
from privbench.core.errors import InputError
from privbench.core.hashing import stable_hash


@dataclass(frozen=True)
class SplitConfig:
    """Split sizes. A request the dataset cannot satisfy is an error naming the field, unless ``scale: fit``
    (then sizes shrink proportionally and the record keeps the sizes actually used)."""

    private: int = 1500
    aux: int = 1500
    test: int = 1000
    targets: int = 100
    scale: str = "exact"
    fixed_aux: bool = False  # the aux split is the same for every seed (hyperparameters tuned on it: the dp board)

    def __post_init__(self) -> None:
        if not isinstance(self.fixed_aux, bool):
            raise InputError(f"fixed_aux must be true or false, got {self.fixed_aux!r}")
        if self.scale not in ("exact", "fit"):
            raise InputError(f"scale must be 'exact' or 'fit', got {self.scale!r}")
        for name in ("private", "aux", "test", "targets"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PluginSpec:
    """A registered id with its frozen params (already validated against the plugin's ``Params``)."""

    id: str
    params: Any
    datasets: Optional[tuple[str, ...]] = None  # restrict a defense config to these datasets (None = all)
    defenses: Optional[tuple[str, ...]] = None  # restrict an attack config to these defense ids (None = all)

    @property
    def params_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    @property
    def label(self) -> str:
        """Stable file-name-safe label: ``id`` plus a short hash of non-default params."""
        return f"{self.id}-{stable_hash(self.params_dict)[:8]}"


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    defenses: tuple[PluginSpec, ...]
    attacks: tuple[PluginSpec, ...]
    splits: SplitConfig = field(default_factory=SplitConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    dataset_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reference: str = "none"  # the defense utility drop is measured against (same dataset and seed)
