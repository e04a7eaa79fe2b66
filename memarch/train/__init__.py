"""Typed configs, device mesh and sharding rules, optimiser, jit-compiled steps, orbax
checkpoints, metric writers, profiler traces and the training loop; run directories may be
local folders or bucket URLs (:mod:`memarch.train.workdir`)."""

from memarch.train.config import (
    CheckpointConfig,
    DataConfig,
    DistributedConfig,
    MeshConfig,
    OptimConfig,
    ProfileConfig,
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
    "ProfileConfig",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "load_config",
    "train",
]
