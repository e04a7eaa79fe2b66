"""Rotary position embedding (RoPE) and positions inside packed segments."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """Position of each token inside its segment: ``[B, T] int -> [B, T] int32``.

    A segment is a maximal run of equal ids, so ``[[7, 7, 7, 2, 2]] -> [[0, 1, 2, 0, 1]]``.
    """
    b, t = segment_ids.shape
    idx = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    prev = jnp.concatenate([segment_ids[:, :1], segment_ids[:, :-1]], axis=1)
    is_start = (segment_ids != prev).at[:, 0].set(True)
    start = jax.lax.cummax(jnp.where(is_start, idx, 0), axis=1)
    return idx - start


def apply_rope(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
    """Rotates feature pairs ``(x[i], x[i + D/2])`` by ``positions · base^(-2i/D)``.

    Shapes: ``x [B, T, H, D]`` (D even), ``positions [B, T]`` -> ``[B, T, H, D]`` in x's dtype.
    """
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"RoPE needs an even head dimension; got head_dim={d}")
    inv_freq = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)
