"""Shared skeleton of the matrix-memory (linear-attention family) mixers.

A layer is: projections → short causal conv → feature map / gates → recurrent op →
(gated) RMSNorm per head → output projection — the flash-linear-attention layer shape.
Subclasses say only what differs: how q and k are mapped, which gates they compute and which
op (chunked form for sequences, single-token step for decode) runs the recurrence.

Decode cache: ``RecurrentCache(state [B, H, K, V] f32, conv [B, W − 1, C], length)``, constant
size whatever the sequence length.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from memarch.layers.norms import GatedRMSNorm, RMSNorm
from memarch.layers.short_conv import ShortConv
from memarch.mixers.protocol import check_call
from memarch.ops import IMPLS, check_impl


@dataclasses.dataclass(frozen=True)
class RecurrentConfig:
    """Options shared by every matrix-memory mixer (subclass configs add their own)."""

    head_dim: int | None = None  # key (and query) width per head; None = d_model // num_heads
    expand_v: float = 1.0  # value width per head = expand_v · head_dim
    short_conv: int = 4  # causal depthwise conv kernel on q, k, v; 0 disables
    output_gate: bool = True  # o_proj(RMSNorm(o) ⊙ silu(W_g x)) instead of o_proj(RMSNorm(o))
    impl: str = "auto"  # op implementation for sequences: naive | chunk | pallas | auto
    chunk_size: int = 64  # chunk length of the chunked op

    def __post_init__(self):
        if self.short_conv < 0:
            raise ValueError(f"short_conv must be >= 0 (0 disables); got {self.short_conv}")
        if self.expand_v <= 0:
            raise ValueError(f"expand_v must be > 0; got {self.expand_v}")
        check_impl(self.impl, IMPLS)
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive int; got {self.chunk_size}")


@struct.dataclass
class RecurrentCache:
    """``state [B, H, K, V]`` float32; ``conv [B, W − 1, C]`` or None; ``length`` int32."""

    state: jax.Array
    conv: jax.Array | None
    length: jax.Array


def head_dims(config: Any, d_model: int, num_heads: int) -> tuple[int, int]:
    """(key width, value width) per head from ``config.head_dim`` and ``config.expand_v``."""
    if config.head_dim is None and d_model % num_heads:
        raise ValueError(
            f"d_model ({d_model}) must be divisible by num_heads ({num_heads}), or set head_dim"
        )
    key_dim = config.head_dim or d_model // num_heads
    return key_dim, max(1, int(round(key_dim * config.expand_v)))


class RecurrentMixer(nnx.Module):
    """Base class; subclasses set ``op``/``step_op`` and may override ``feature_map``/``gates``."""

    def __init__(self, config: RecurrentConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        self.config = config
        self.d_model = d_model
        self.num_heads = num_heads
        self.key_dim, self.value_dim = head_dims(config, d_model, num_heads)
        h, dk, dv = num_heads, self.key_dim, self.value_dim
        self.q_proj = nnx.Linear(d_model, h * dk, use_bias=False, rngs=rngs)
        self.k_proj = (
            nnx.Linear(d_model, h * dk, use_bias=False, rngs=rngs) if self.has_key_proj else None
        )
        self.v_proj = nnx.Linear(d_model, h * dv, use_bias=False, rngs=rngs)
        conv_width = h * ((2 if self.has_key_proj else 1) * dk + dv)
        self.conv = (
            ShortConv(conv_width, config.short_conv, rngs=rngs) if config.short_conv else None
        )
        if config.output_gate:
            self.g_proj = nnx.Linear(d_model, h * dv, use_bias=False, rngs=rngs)
            self.o_norm = GatedRMSNorm(dv, rngs=rngs)
        else:
            self.o_norm = RMSNorm(dv, rngs=rngs)
        self.o_proj = nnx.Linear(h * dv, d_model, use_bias=False, rngs=rngs)

    # --- what subclasses define -------------------------------------------------------------
    # False: the mixer derives its keys from its gates (HGRN2) and has no key projection.
    has_key_proj: bool = True

    def feature_map(self, q: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Maps q, k ``[B, T, H, K]`` before the op (identity by default)."""
        return q, k

    def gates(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """Gate arrays passed to the op after v (none by default). ``x [B, T, D]``."""
        return ()

    def prepare(self, x, q, k, v):
        """``(x [B,T,D], q [B,T,H,K], k [B,T,H,K] | None, v [B,T,H,V]) -> (q, k, v, gates)``:
        the op's inputs. By default the feature map on q, k and ``gates(x)``."""
        q, k = self.feature_map(q, k)
        return q, k, v, self.gates(x)

    # The recurrence, as a pair of memarch.ops functions with the shared op convention:
    #   op(q, k, v, *gates, initial_state=, output_final_state=, segment_ids=, impl=,
    #      chunk_size=) -> (o [B, T, H, V], final_state [B, H, K, V])
    #   step_op(q, k, v, *gates, state) -> (o [B, H, V], state), q/k/v without the T axis.
    op: Any = None
    step_op: Any = None

    # --- the shared pipeline ------------------------------------------------------------------
    def init_cache(self, batch_size: int, max_len: int, dtype: Any = jnp.float32):
        del max_len  # constant-size state
        h, dk, dv = self.num_heads, self.key_dim, self.value_dim
        return RecurrentCache(
            state=jnp.zeros((batch_size, h, dk, dv), jnp.float32),
            conv=None if self.conv is None else self.conv.init_cache(batch_size, dtype),
            length=jnp.zeros((), jnp.int32),
        )

    def __call__(
        self,
        x: jax.Array,
        *,
        cache: RecurrentCache | None = None,
        segment_ids: jax.Array | None = None,
    ):
        check_call(x, self.d_model, cache, segment_ids)
        b, t, _ = x.shape
        h, dk, dv = self.num_heads, self.key_dim, self.value_dim
        projs = (
            [self.q_proj(x)] + ([self.k_proj(x)] if self.has_key_proj else []) + [self.v_proj(x)]
        )
        qkv = jnp.concatenate(projs, axis=-1)
        conv_cache = None
        if self.conv is not None:
            qkv, conv_cache = self.conv(
                qkv, segment_ids=segment_ids, cache=None if cache is None else cache.conv
            )
        nk = 2 if self.has_key_proj else 1
        q, k, v = jnp.split(qkv, [h * dk, nk * h * dk], axis=-1)
        k = k.reshape(b, t, h, dk) if self.has_key_proj else None
        q, k, v, gates = self.prepare(x, q.reshape(b, t, h, dk), k, v.reshape(b, t, h, dv))
        if cache is not None and t == 1:
            gates_t = [g[:, 0] for g in gates]
            o, state = type(self).step_op(q[:, 0], k[:, 0], v[:, 0], *gates_t, cache.state)
            o = o[:, None]
        else:
            o, state = type(self).op(
                q,
                k,
                v,
                *gates,
                initial_state=None if cache is None else cache.state,
                output_final_state=cache is not None,
                segment_ids=segment_ids,
                impl=self.config.impl,
                chunk_size=self.config.chunk_size,
            )
        if self.config.output_gate:
            o = self.o_norm(o, self.g_proj(x).reshape(b, t, h, dv))
        else:
            o = self.o_norm(o)
        y = self.o_proj(o.reshape(b, t, h * dv))
        new_cache = None
        if cache is not None:
            new_cache = RecurrentCache(state=state, conv=conv_cache, length=cache.length + t)
        return y, new_cache
