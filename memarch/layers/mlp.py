"""SwiGLU feed-forward block."""

from __future__ import annotations

import jax
from flax import nnx


class SwiGLU(nnx.Module):
    """``y = W_down (silu(W_gate x) ⊙ W_up x)``; shapes ``[..., D] -> [..., D]``.

    ``hidden`` defaults to ``8/3·D`` rounded up to a multiple of 8 (the LLaMA convention).
    """

    def __init__(self, d_model: int, hidden: int | None = None, *, rngs: nnx.Rngs):
        if hidden is None:
            hidden = -(-int(8 * d_model / 3) // 8) * 8
        self.gate = nnx.Linear(d_model, hidden, use_bias=False, rngs=rngs)
        self.up = nnx.Linear(d_model, hidden, use_bias=False, rngs=rngs)
        self.down = nnx.Linear(hidden, d_model, use_bias=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


__all__ = ["SwiGLU"]
