"""Datasets: embedded offline sets plus local-format loaders, and seeded disjoint splits.

Every dataset is a function ``(options: dict) -> Pool`` registered in :data:`DATASETS`. The pool is split into
private / aux / test (disjoint, seeded) and ``targets`` (a seeded subset of private), each recorded by index hash.
"""

from __future__ import annotations

from privbench.core.registry import DATASETS
from privbench.data import actions, embedded, local, video  # noqa: F401  (registration)
from privbench.data.core import Pool, load_splits, pool_hash

#: Where local datasets are installed by default (Debian's ``dataset-*`` packages).
SYSTEM_DATA = ("/usr/share/datasets",)


def data_paths() -> list[str]:
    """Every place the registered datasets read from by default: the embedded sets' package files and the system
    dataset directory. A sandbox child may read none of them (:func:`privbench.submit.view.denied_paths`)."""
    return [*embedded.package_data_paths(), *SYSTEM_DATA]


__all__ = ["DATASETS", "Pool", "data_paths", "load_splits", "pool_hash"]
