"""Built-in defenses. Each module registers its defenses in :data:`privbench.core.registry.DEFENSES` on import; this
package is loaded through the ``privbench.defenses`` entry point (``pyproject.toml``), never by the core by name.

To add one: subclass :class:`privbench.core.contracts.Defense` (or :class:`privbench.defenses.base.InputDefense` for per-image
transforms), give it a frozen ``Params`` dataclass and ``surfaces``, and decorate it with
``@DEFENSES.register("my-id")``. See ``defenses/README.md``.
"""

from __future__ import annotations

from privbench.core.registry import DEFENSES
from privbench.defenses import (
    avatar,
    baselines,
    bn_synthetic,
    controls,
    dp_sgd,
    maskdp,
    masking,
    redaction,
    split_ae,
    visualmixer,
)
from privbench.defenses.base import InputDefense  # noqa: E402

__all__ = ["DEFENSES", "InputDefense"]
