"""Threat models (docs/THREAT_MODELS.md): who the attacker is and what it holds. Every attack states one, every
defense states which ones it claims protection against, and leakage is reported on one scale per threat model."""

from __future__ import annotations

import enum


class ThreatModel(str, enum.Enum):
    """The attacker's position. Each has its own leakage column; numbers are never maxed across them."""

    OBSERVER = "observer"  # a passive observer of the released data or features (and the public algorithm)
    MODEL_HOLDER = "model-holder"  # a holder of the released (trained) model
    SERVER = "server"  # an honest-but-curious server that sees the shared training updates
    TRAINING_CODE = "training-code"  # malicious training code run by the defender on the private data
    LINKER = "linker"  # an attacker holding the originals who links released samples to them

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    ThreatModel.OBSERVER: "passive observer of the released data or features",
    ThreatModel.MODEL_HOLDER: "holder of the released model",
    ThreatModel.SERVER: "honest-but-curious server seeing shared updates",
    ThreatModel.TRAINING_CODE: "malicious training code",
    ThreatModel.LINKER: "linker holding the originals",
}
