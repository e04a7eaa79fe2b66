"""Normalisation layers: RMSNorm and the output-gated RMSNorm of the linear-attention family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def rms_normalize(x: jax.Array, eps: float) -> jax.Array:
    """``x / sqrt(mean(x², -1) + eps)`` computed in float32, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype)


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """``x / sqrt(Σ x² + eps)`` over the last axis, in float32, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.sum(x32 * x32, -1, keepdims=True) + eps)).astype(x.dtype)


class RMSNorm(nnx.Module):
    """RMSNorm over the last axis: ``y = x / rms(x) · w`` with w initialised to 1.

    Shapes: ``x [..., D] -> [..., D]``.
    """

    def __init__(self, dim: int, *, eps: float = 1e-6, rngs: nnx.Rngs | None = None):
        del rngs
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return rms_normalize(x, self.eps) * self.scale[...].astype(x.dtype)


class GatedRMSNorm(nnx.Module):
    """Output norm with a SiLU gate: ``y = RMSNorm(o) ⊙ silu(gate)`` (FLA's FusedRMSNormGated).

    Normalises over the last axis (one head's value dimension), with a learned scale shared by
    all heads. Shapes: ``o, gate [..., D] -> [..., D]``.
    """

    def __init__(self, dim: int, *, eps: float = 1e-6, rngs: nnx.Rngs | None = None):
        self.norm = RMSNorm(dim, eps=eps, rngs=rngs)

    def __call__(self, o: jax.Array, gate: jax.Array) -> jax.Array:
        return self.norm(o) * jax.nn.silu(gate.astype(o.dtype))
