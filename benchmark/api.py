"""The public module for plugin authors: everything a new defense or attack imports, from one place.

    from privbench.api import DEFENSES, InputDefense, InputError

    @DEFENSES.register("my-defense")
    class MyDefense(InputDefense):
        ...

Names here are the stable surface (docs/DESIGN.md, contracts; ``defenses/README.md``, ``attacks/README.md``,
docs/SUBMITTING.md); the modules they come from may move. The built-in plugins import the wings directly (they sit
below this module in the import order, tests/test_layout.py); a third-party plugin, an ``--plugin`` file or a
submission should import only from here.
"""

from __future__ import annotations

from privbench.attacks.nets import Embedder, TrainBudget, UNetDecoder, fit_decoder, shift_pairs
from privbench.core.contracts import Attack, AttackContext, AttackOutput, AttackView, Defense, RunContext, TaskConfig
from privbench.core.errors import InputError
from privbench.core.hashing import stable_hash, tensor_hash
from privbench.core.images import Access, ImageSet, Modality, Splits, Surface, check_images
from privbench.core.registry import ATTACKS, DEFENSES, Registry
from privbench.core.release import Bitstream, Release, ReleaseMeta
from privbench.core.seeding import derive_seed, seeded
from privbench.core.threats import ThreatModel
from privbench.defenses.base import InputDefense, ModelReleaser
from privbench.metrics.image import ssim, total_variation
from privbench.metrics.registration import REGISTRATION_RADIUS, random_shift, register, registered_mse
from privbench.models import SplitModel, accuracy, build_model, input_channels, map_batched, predict, train_classifier

__all__ = [
    # registries and errors
    "ATTACKS", "DEFENSES", "Registry", "InputError",
    # the contracts (docs/DESIGN.md)
    "Access", "Attack", "AttackContext", "AttackOutput", "AttackView", "Bitstream", "Defense", "ImageSet", "Modality",
    "Release", "ReleaseMeta", "RunContext", "Splits", "Surface", "TaskConfig", "ThreatModel", "check_images",
    # base classes for the two common kinds of defense
    "InputDefense", "ModelReleaser",
    # randomness and hashing: pass generators, never seed torch globally
    "derive_seed", "seeded", "stable_hash", "tensor_hash",
    # task models
    "SplitModel", "accuracy", "build_model", "input_channels", "map_batched", "predict", "train_classifier",
    # scoring helpers an attack trains against (scores are registered over shifts of up to REGISTRATION_RADIUS px)
    "REGISTRATION_RADIUS", "random_shift", "register", "registered_mse", "ssim", "total_variation",
    # networks and training loops of the built-in reconstruction attacks
    "Embedder", "TrainBudget", "UNetDecoder", "fit_decoder", "shift_pairs",
]
