"""Short causal depthwise convolution, segment-aware, with a decode cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memarch.layers.rope import segment_positions

ACTIVATIONS = ("silu", "identity")


class ShortConv(nnx.Module):
    """Causal depthwise conv over time: ``y_t = act(Σ_{j<W} w_j ⊙ x_{t−j} [+ b])``.

    ``weight [W, C]``: row j multiplies the input j steps back (row 0 the current token).
    ``bias=True`` adds a learned per-channel bias ``b [C]`` (initialised to 0) before the
    activation (flash-linear-attention's ``conv_bias``).

    Inputs before the start of a token's segment count as zero, so packed sequences never leak
    into each other. Shapes: ``x [B, T, C] -> y [B, T, C]``; the decode cache holds the last
    ``W − 1`` inputs, ``[B, W − 1, C]`` (oldest first).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 4,
        *,
        activation: str = "silu",
        bias: bool = False,
        rngs: nnx.Rngs,
    ):
        if kernel_size < 1:
            raise ValueError(f"short conv kernel_size must be >= 1; got {kernel_size}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"short conv activation must be one of {ACTIVATIONS}; got {activation!r}"
            )
        self.kernel_size = kernel_size
        self.activation = activation
        bound = kernel_size**-0.5
        self.weight = nnx.Param(
            jax.random.uniform(rngs.params(), (kernel_size, channels), jnp.float32, -bound, bound)
        )
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32)) if bias else None

    def init_cache(self, batch_size: int, dtype) -> jax.Array:
        return jnp.zeros((batch_size, self.kernel_size - 1, self.weight.shape[1]), dtype)

    def __call__(
        self,
        x: jax.Array,
        *,
        segment_ids: jax.Array | None = None,
        cache: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Returns ``(y [B, T, C], new_cache [B, W − 1, C])``.

        ``cache`` (the previous ``W − 1`` inputs) continues a sequence; without it the history
        is zero.
        """
        b, t, c = x.shape
        w = self.kernel_size
        if cache is None:
            cache = jnp.zeros((b, w - 1, c), x.dtype)
        xp = jnp.concatenate([cache.astype(x.dtype), x], axis=1)  # [B, W-1+T, C]
        weight = self.weight[...].astype(x.dtype)
        if segment_ids is not None:
            # A token sees x_{t-j} only while it stays inside the same segment.
            pos = segment_positions(segment_ids)  # [B, T]
        y = jnp.zeros_like(x)
        for j in range(w):  # W is small (≤ 4 typically): an unrolled sum of shifted inputs
            shifted = jax.lax.dynamic_slice_in_dim(xp, w - 1 - j, t, axis=1)
            if segment_ids is not None:
                shifted = jnp.where((pos >= j)[..., None], shifted, 0)
            y = y + shifted * weight[j]
        if self.bias is not None:
            y = y + self.bias[...].astype(x.dtype)
        if self.activation == "silu":
            y = jax.nn.silu(y)
        return y, xp[:, t:, :] if w > 1 else xp[:, :0, :]
