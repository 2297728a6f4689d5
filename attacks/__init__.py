"""Built-in attacks. Each module registers its attacks in :data:`ATTACKS` on import.

To add one: subclass :class:`benchmark.contracts.Attack`, declare ``requires`` (surfaces), ``access`` and a frozen
``Params`` dataclass, implement ``run(view, ctx) -> AttackOutput``, and decorate it with
``@ATTACKS.register("my-id")``. Attacks never compute metrics; the runner scores outputs centrally.
See ``attacks/README.md``.
"""

from __future__ import annotations

from benchmark.contracts import Attack
from benchmark.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")

from . import gan, gradient, histogram, inpainting, inversion, linkage, membership, memorization, nearest, optim_inversion  # noqa: E402,F401,I001

__all__ = ["ATTACKS"]
