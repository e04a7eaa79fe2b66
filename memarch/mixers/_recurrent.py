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
    norm_eps: float = 1e-6  # epsilon of the output RMSNorm (flash-linear-attention layers: 1e-5)
    conv_bias: bool = False  # a learned per-channel bias in the short conv (fla's conv_bias)
    # with short_conv = 0: SiLU on v, as the conv's activation would give (fla's DeltaNet, Gated
    # DeltaNet and MoM do this; q and k get SiLU from the DeltaNet feature map either way)
    silu_v: bool = False
    # heads of q and k (None = num_heads); each q/k head is shared by num_heads / qk_heads
    # consecutive value heads (fla's Gated DeltaNet with num_v_heads > num_heads)
    qk_heads: int | None = None

    def __post_init__(self):
        if self.qk_heads is not None and (
            isinstance(self.qk_heads, bool)
            or not isinstance(self.qk_heads, int)
            or self.qk_heads < 1
        ):
            raise ValueError(f"qk_heads must be a positive int or None; got {self.qk_heads!r}")
        if self.short_conv < 0:
            raise ValueError(f"short_conv must be >= 0 (0 disables); got {self.short_conv}")
        if isinstance(self.norm_eps, bool) or not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be a float > 0; got {self.norm_eps!r}")
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
    """Base class; subclasses set ``op``/``step_op`` and may override ``feature_map``/``gates``.

    The layer is exposed as reusable parts, so a mixture of memories
    (:mod:`memarch.mixers.mom`) can run M copies of any subclass's memory without knowing which
    subclass it is:

    - :meth:`memory_params`: the attributes that write to the memory (key/value projections
      and the gate parameters) — one copy per memory in a mixture; the rest (query
      projection, short conv, output head, constants such as Gated DeltaNet's ``A_log``) is
      shared;
    - :meth:`query`, :meth:`keys_values`: the short conv's input channels ``q | k | v``
      (:attr:`conv_channels` wide), :meth:`split_heads` splits the conv output into heads;
    - :meth:`gates`: the op's gate arrays, token-local, computed from ``x``;
    - :meth:`features`: conv output and gates -> the op's inputs (feature map);
    - :meth:`identity_inputs`: op inputs of a step that leaves the state unchanged;
    - :meth:`run_op`, :meth:`run_step`: the op pair (chunked op, single-token step op);
    - :meth:`output`: the output head ``o_proj(RMSNorm(o) [⊙ silu(W_g x)])``.
    """

    def __init__(self, config: RecurrentConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        self.config = config
        self.d_model = d_model
        self.num_heads = num_heads
        self.key_dim, self.value_dim = head_dims(config, d_model, num_heads)
        self.qk_heads = config.qk_heads or num_heads
        if num_heads % self.qk_heads:
            raise ValueError(
                f"qk_heads ({self.qk_heads}) must divide num_heads ({num_heads}): each q/k head "
                "is shared by num_heads / qk_heads value heads"
            )
        h, dk, dv = num_heads, self.key_dim, self.value_dim
        hq = self.qk_heads
        self.q_proj = nnx.Linear(d_model, hq * dk, use_bias=False, rngs=rngs)
        self.k_proj = (
            nnx.Linear(d_model, hq * dk, use_bias=False, rngs=rngs) if self.has_key_proj else None
        )
        self.v_proj = nnx.Linear(d_model, h * dv, use_bias=False, rngs=rngs)
        self.conv = (
            ShortConv(
                self.conv_channels,
                config.short_conv,
                activation=self.conv_activation,
                bias=config.conv_bias,
                rngs=rngs,
            )
            if config.short_conv
            else None
        )
        if config.output_gate:
            self.g_proj = nnx.Linear(d_model, h * dv, use_bias=False, rngs=rngs)
            self.o_norm = GatedRMSNorm(self.norm_dim, eps=config.norm_eps, rngs=rngs)
        else:
            self.o_norm = RMSNorm(self.norm_dim, eps=config.norm_eps, rngs=rngs)
        self.o_proj = nnx.Linear(h * dv, d_model, use_bias=False, rngs=rngs)

    # --- what subclasses define -------------------------------------------------------------
    # False: the mixer derives its keys from its gates (HGRN2) and has no key projection.
    has_key_proj: bool = True
    # the short conv's activation (HGRN2's fla layout convolves without one)
    conv_activation: str = "silu"

    @property
    def norm_dim(self) -> int:
        """Width the output RMSNorm normalises over: one head's value width ``V`` (subclasses
        may normalise all heads together, ``H·V``)."""
        return self.value_dim

    def feature_map(self, q: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Maps q, k ``[..., H, K]`` before the op (identity by default)."""
        return q, k

    def gates(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """Gate arrays passed to the op after v (none by default). ``x [B, T, D]`` -> arrays
        ``[B, T, H]`` or ``[B, T, H, K]``, each position computed from ``x_t`` alone."""
        return ()

    def memory_params(self) -> tuple[str, ...]:
        """Names of the attributes that write to the memory: the key and value projections
        here; subclasses add their gate parameters. A mixture of memories owns one copy of
        each per memory and shares every other parameter."""
        return ("k_proj", "v_proj") if self.has_key_proj else ("v_proj",)

    def features(
        self, q: jax.Array, k: jax.Array | None, v: jax.Array, gates: tuple[jax.Array, ...]
    ) -> tuple[jax.Array, jax.Array, jax.Array, tuple[jax.Array, ...]]:
        """Conv output heads ``q, k [..., H, K]`` (k None without a key projection),
        ``v [..., H, V]`` and ``gates`` -> the op's ``(q, k, v, gates)``: by default the
        feature map on q, k. Any leading axes (``[B, T]``, or ``[B]`` for one decode step)."""
        q, k = self.feature_map(q, k)
        return q, k, v, gates

    # The recurrence, as a pair of memarch.ops functions with the shared op convention:
    #   op(q, k, v, *gates, initial_state=, output_final_state=, segment_ids=, impl=,
    #      chunk_size=) -> (o [B, T, H, V], final_state [B, H, K, V])
    #   step_op(q, k, v, *gates, state) -> (o [B, H, V], state), q/k/v without the T axis.
    op: Any = None
    step_op: Any = None

    # --- the parts ----------------------------------------------------------------------------
    @property
    def conv_channels(self) -> int:
        """Width C of the short conv's input ``q | k | v``: ``H·(2K + V)``, or ``H·(K + V)``
        without a key projection (``H_qk·2K + H·V`` with ``qk_heads``)."""
        nk = 2 if self.has_key_proj else 1
        return self.qk_heads * nk * self.key_dim + self.num_heads * self.value_dim

    def query(self, x: jax.Array) -> jax.Array:
        """``x [B, T, D] -> q [B, T, H_qk·K]`` (before the conv; H_qk = qk_heads or H)."""
        return self.q_proj(x)

    def keys_values(self, x: jax.Array) -> jax.Array:
        """``x [B, T, D] -> k | v [B, T, C − H·K]`` (before the conv; v alone without a key
        projection)."""
        projs = ([self.k_proj(x)] if self.has_key_proj else []) + [self.v_proj(x)]
        return jnp.concatenate(projs, axis=-1)

    def split_heads(self, qkv: jax.Array) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        """Conv output ``[..., C]`` -> ``q [..., H, K]``, ``k [..., H, K]`` (None without a
        key projection), ``v [..., H, V]``."""
        h, dk, dv, hq = self.num_heads, self.key_dim, self.value_dim, self.qk_heads
        lead = qkv.shape[:-1]
        nk = 2 if self.has_key_proj else 1
        q, k, v = jnp.split(qkv, [hq * dk, nk * hq * dk], axis=-1)
        if self.conv is None and self.config.silu_v:
            v = jax.nn.silu(v)
        q = jnp.repeat(q.reshape(*lead, hq, dk), h // hq, axis=-2)
        if self.has_key_proj:
            k = jnp.repeat(k.reshape(*lead, hq, dk), h // hq, axis=-2)
        else:
            k = None
        return q, k, v.reshape(*lead, h, dv)

    def prepare(self, x, q, k, v):
        """``(x [B,T,D], q [B,T,H,K], k [B,T,H,K] | None, v [B,T,H,V]) -> (q, k, v, gates)``:
        the op's inputs, :meth:`features` with ``gates(x)``."""
        return self.features(q, k, v, self.gates(x))

    def identity_inputs(
        self, valid: jax.Array, q: jax.Array, k: jax.Array, v: jax.Array, gates: tuple
    ) -> tuple[jax.Array, jax.Array, jax.Array, tuple[jax.Array, ...]]:
        """Op inputs where positions with ``valid [...]`` False (leading axes of q) become
        steps that leave the state unchanged and read 0: q = k = v = 0 and every gate 0 (no
        decay; a write strength of 0). Subclasses whose op has another identity override."""
        ok = valid[..., None, None]
        q, k, v = (jnp.where(ok, a, 0) for a in (q, k, v))
        gates = tuple(
            jnp.where(valid.reshape(valid.shape + (1,) * (g.ndim - valid.ndim)), g, 0)
            for g in gates
        )
        return q, k, v, gates

    def run_op(
        self,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        gates: tuple[jax.Array, ...],
        *,
        initial_state: jax.Array | None = None,
        output_final_state: bool = False,
        segment_ids: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        """The chunked (or naive, per ``config.impl``) op over ``[B, T, H, ·]`` inputs ->
        ``(o [B, T, H, V], final state [B, H, K, V] or None)``."""
        return type(self).op(
            q,
            k,
            v,
            *gates,
            initial_state=initial_state,
            output_final_state=output_final_state,
            segment_ids=segment_ids,
            impl=self.config.impl,
            chunk_size=self.config.chunk_size,
        )

    def run_step(
        self, q: jax.Array, k: jax.Array, v: jax.Array, gates: tuple, state: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """One token: ``q, k [B, H, K]``, ``v [B, H, V]``, ``state [B, H, K, V]`` ->
        ``(o [B, H, V], state)``."""
        return type(self).step_op(q, k, v, *gates, state)

    def output(self, x: jax.Array, o: jax.Array) -> jax.Array:
        """Output head: ``o [B, T, H, V] -> o_proj(RMSNorm(o) ⊙ silu(W_g x)) [B, T, D]``
        (``o_proj(RMSNorm(o))`` without the output gate); RMSNorm per head, or over all heads
        together when :attr:`norm_dim` is ``H·V``."""
        b, t, _ = x.shape
        h, dv = self.num_heads, self.value_dim
        shape = (b, t, h, dv) if self.norm_dim == dv else (b, t, h * dv)
        o = o.reshape(shape)
        if self.config.output_gate:
            o = self.o_norm(o, self.g_proj(x).reshape(shape))
        else:
            o = self.o_norm(o)
        return self.o_proj(o.reshape(b, t, h * dv))

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
        t = x.shape[1]
        qkv = jnp.concatenate([self.query(x), self.keys_values(x)], axis=-1)
        conv_cache = None
        if self.conv is not None:
            qkv, conv_cache = self.conv(
                qkv, segment_ids=segment_ids, cache=None if cache is None else cache.conv
            )
        q, k, v = self.split_heads(qkv)
        q, k, v, gates = self.prepare(x, q, k, v)
        if cache is not None and t == 1:
            gates_t = tuple(g[:, 0] for g in gates)
            o, state = self.run_step(q[:, 0], k[:, 0], v[:, 0], gates_t, cache.state)
            o = o[:, None]
        else:
            o, state = self.run_op(
                q,
                k,
                v,
                gates,
                initial_state=None if cache is None else cache.state,
                output_final_state=cache is not None,
                segment_ids=segment_ids,
            )
        y = self.output(x, o)
        new_cache = None
        if cache is not None:
            new_cache = RecurrentCache(state=state, conv=conv_cache, length=cache.length + t)
        return y, new_cache
