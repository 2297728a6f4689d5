"""Built-in defenses. Each module registers its defenses in :data:`benchmark.registry.DEFENSES` on import; this
package is loaded through the ``privbench.defenses`` entry point (``pyproject.toml``), never by the core by name.

To add one: subclass :class:`benchmark.contracts.Defense` (or :class:`defenses.base.InputDefense` for per-image
transforms), give it a frozen ``Params`` dataclass and ``surfaces``, and decorate it with
``@DEFENSES.register("my-id")``. See ``defenses/README.md``.
"""

from __future__ import annotations

from benchmark.registry import DEFENSES

from . import (avatar, baselines, bn_synthetic, controls, dp_sgd, masking, maskdp, redaction,  # noqa: E402,F401
               split_ae, visualmixer)
from .base import InputDefense  # noqa: E402

__all__ = ["DEFENSES", "InputDefense"]
