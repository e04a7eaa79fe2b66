"""Typed configs, optimiser, jit-compiled steps and the training loop."""

from memarch.train.config import (
    DataConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from memarch.train.trainer import TrainResult, train

__all__ = [
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "load_config",
    "train",
]
