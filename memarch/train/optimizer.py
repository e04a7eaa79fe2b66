"""Optimiser and learning-rate schedules (optax)."""

from __future__ import annotations

import jax
import optax

from memarch.train.config import OptimConfig

SCHEDULES = ("cosine", "constant")


def make_schedule(cfg: OptimConfig, num_steps: int) -> optax.Schedule:
    """Linear warmup to ``learning_rate`` then cosine decay (to ``end_lr_ratio``) or constant."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {list(SCHEDULES)}; got {cfg.schedule!r}")
    if cfg.warmup_steps < 0:
        raise ValueError(f"optim.warmup_steps must be >= 0; got {cfg.warmup_steps}")
    warmup = min(cfg.warmup_steps, max(num_steps - 1, 0))
    if cfg.schedule == "constant":
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, cfg.learning_rate, max(warmup, 1)),
                optax.constant_schedule(cfg.learning_rate),
            ],
            [warmup],
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.end_lr_ratio,
    )


def decay_mask(params) -> object:
    """Weight decay on matrices (rank ≥ 2) only: none on norms, biases, gates or scalars."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimConfig, num_steps: int) -> optax.GradientTransformation:
    """AdamW with the schedule above, global-norm clipping and the decay mask."""
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(
        optax.adamw(
            make_schedule(cfg, num_steps),
            b1=cfg.b1,
            b2=cfg.b2,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)
