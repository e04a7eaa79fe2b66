"""Typed configs, device mesh and sharding rules, optimiser, jit-compiled steps, orbax
checkpoints, metric writers and the training loop."""

from memarch.train.config import (
    CheckpointConfig,
    DataConfig,
    DistributedConfig,
    MeshConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from memarch.train.trainer import TrainResult, train

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "DistributedConfig",
    "MeshConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "load_config",
    "train",
]
