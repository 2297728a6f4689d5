"""Datasets: embedded offline sets plus local-format loaders, and seeded disjoint splits.

Every dataset is a function ``(options: dict) -> Pool`` registered in :data:`DATASETS`. The pool is split into
private / aux / test (disjoint, seeded) and ``targets`` (a seeded subset of private), each recorded by index hash.
"""

from __future__ import annotations

from .core import DATASETS, Pool, load_splits, pool_hash
from . import actions, embedded, local, video  # noqa: F401  (registration)

__all__ = ["DATASETS", "Pool", "load_splits", "pool_hash"]
