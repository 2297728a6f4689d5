"""Built-in attacks. Each module registers its attacks in :data:`benchmark.registry.ATTACKS` on import; this
package is loaded through the ``privbench.attacks`` entry point (``pyproject.toml``), never by the core by name.

To add one: subclass :class:`benchmark.contracts.Attack`, declare ``requires`` (surfaces), ``access`` and a frozen
``Params`` dataclass, implement ``run(view, ctx) -> AttackOutput``, and decorate it with
``@ATTACKS.register("my-id")``. Attacks never compute metrics, never import a defense, and run in an isolated child
process (``benchmark.isolation``). See ``attacks/README.md``.
"""

from __future__ import annotations

from benchmark.registry import ATTACKS

from . import (gan, gradient, histogram, inpainting, inversion, linkage, membership, memorization,  # noqa: F401
               nearest, optim_inversion, reid)

__all__ = ["ATTACKS"]
