"""Multi-host start-up: ``jax.distributed.initialize`` from the config, once per process."""

from __future__ import annotations

import jax

from memarch.train.config import DistributedConfig


def initialize(cfg: DistributedConfig) -> None:
    """Joins the multi-process job described by ``cfg`` (a no-op unless ``cfg.initialize``).

    Must run before anything touches a device. Empty / ``0`` / ``-1`` fields are left to JAX's
    auto-detection (TPU pods, SLURM, …). On CPU the collectives use gloo (JAX's default).
    Calling it again in the same process does nothing.
    """
    if not cfg.initialize or jax.distributed.is_initialized():
        return
    kwargs = {}
    if cfg.coordinator_address:
        kwargs["coordinator_address"] = cfg.coordinator_address
    if cfg.num_processes > 0:
        kwargs["num_processes"] = cfg.num_processes
    if cfg.process_id >= 0:
        kwargs["process_id"] = cfg.process_id
    jax.distributed.initialize(**kwargs)


__all__ = ["initialize"]
