"""Small CPU task models with named split points (docs/DESIGN.md, Task models)."""

from __future__ import annotations

from privbench.core.registry import MODELS
from privbench.models import scatter as _scatter  # noqa: F401  (registers the scatternet model)
from privbench.models.nets import SplitModel, build_model, input_channels
from privbench.models.train import (
                                    EarlyStopping,
                                    accuracy,
                                    correct,
                                    early_stopping_of,
                                    map_batched,
                                    predict,
                                    train_classifier,
)

__all__ = ["MODELS", "SplitModel", "build_model", "input_channels", "train_classifier", "accuracy", "predict",
           "map_batched", "EarlyStopping", "early_stopping_of", "correct"]
