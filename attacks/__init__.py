"""Built-in attacks. Each module registers its attacks in :data:`privbench.core.registry.ATTACKS` on import; this
package is loaded through the ``privbench.attacks`` entry point (``pyproject.toml``), never by the core by name.

To add one: subclass :class:`privbench.core.contracts.Attack`, declare ``requires`` (surfaces), ``access`` and a frozen
``Params`` dataclass, implement ``run(view, ctx) -> AttackOutput``, and decorate it with
``@ATTACKS.register("my-id")``. Attacks never compute metrics, never import a defense, and run in an isolated child
process (``privbench.run.isolation``). See ``attacks/README.md``.
"""

from __future__ import annotations

from privbench.attacks import (
    gan,
    gradient,
    histogram,
    inpainting,
    inversion,
    linkage,
    membership,
    memorization,
    nearest,
    optim_inversion,
    reid,
)
from privbench.core.registry import ATTACKS

__all__ = ["ATTACKS"]
