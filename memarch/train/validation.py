"""Checks of a whole training config against the devices, run before anything is compiled."""

from __future__ import annotations

from memarch.train.config import COMPUTE_DTYPES, ON_NONFINITE, TrainConfig
from memarch.train.mesh import check_rules, data_parallel_size, mesh_shape


def _positive(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")


def validate(cfg: TrainConfig, num_devices: int) -> dict[str, int]:
    """Raises ``ValueError`` naming the field and the accepted values for a bad config.

    Returns the resolved mesh sizes ``{"data", "fsdp", "tensor"}`` for ``num_devices``.
    """
    _positive("num_steps", cfg.num_steps)
    _positive("batch_size", cfg.batch_size)
    _positive("grad_accum_steps", cfg.grad_accum_steps)
    for name in ("log_every", "eval_every"):
        _positive(name, getattr(cfg, name), 0)
    _positive("checkpoint.every", cfg.checkpoint.every, 0)
    _positive("checkpoint.keep", cfg.checkpoint.keep)
    _positive("max_consecutive_skips", cfg.max_consecutive_skips)
    if cfg.compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"compute_dtype must be one of {list(COMPUTE_DTYPES)}; got {cfg.compute_dtype!r}"
        )
    if cfg.on_nonfinite not in ON_NONFINITE:
        raise ValueError(
            f"on_nonfinite must be one of {list(ON_NONFINITE)}; got {cfg.on_nonfinite!r}"
        )
    if cfg.peak_tflops < 0:
        raise ValueError(f"peak_tflops must be >= 0 (0 = no MFU); got {cfg.peak_tflops}")
    if cfg.model.vocab_size < cfg.data.vocab_size:
        raise ValueError(
            f"model.vocab_size ({cfg.model.vocab_size}) must be >= data.vocab_size "
            f"({cfg.data.vocab_size})"
        )
    cfg.model.layer_names()  # pattern errors
    check_rules(cfg.mesh)
    sizes = mesh_shape(cfg.mesh, num_devices)
    if cfg.batch_size % cfg.grad_accum_steps:
        raise ValueError(
            f"batch_size ({cfg.batch_size}) must be divisible by grad_accum_steps "
            f"({cfg.grad_accum_steps})"
        )
    micro = cfg.batch_size // cfg.grad_accum_steps
    dp = data_parallel_size(cfg.mesh, sizes)
    if micro % dp:
        raise ValueError(
            f"batch_size / grad_accum_steps = {micro} must be divisible by the data-parallel "
            f"size {dp} (mesh data × fsdp = {sizes['data']} × {sizes['fsdp']})"
        )
    return sizes


__all__ = ["validate"]
