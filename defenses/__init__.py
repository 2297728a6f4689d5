"""Built-in defenses. Each module registers its defenses in :data:`DEFENSES` on import.

To add one: subclass :class:`benchmark.contracts.Defense` (or :class:`InputDefense` for per-image transforms),
give it a frozen ``Params`` dataclass and ``surfaces``, and decorate it with ``@DEFENSES.register("my-id")``.
See ``defenses/README.md``.
"""

from __future__ import annotations

from benchmark.contracts import Defense
from benchmark.registry import Registry

DEFENSES: Registry[type[Defense]] = Registry("defense")

from .base import InputDefense  # noqa: E402
from . import baselines, bn_synthetic, dp_sgd, masking, split_ae, visualmixer  # noqa: E402,F401

__all__ = ["DEFENSES", "InputDefense"]
