"""Causal softmax attention: multi-head / grouped-query, RoPE, KV cache; and sliding-window.

Registered as ``attention`` (letter ``A``) and ``swa`` (letter ``S``).

``o_t = Σ_{i ∈ N(t)} softmax_i(q_t·k_i / √d) v_i`` where ``N(t)`` is every earlier key of the
same sequence (``attention``) or the last ``window`` of them, ``t`` included (``swa``).
Decoding keeps every key in a ``[B, max_len, H_kv, d]`` cache (``attention``) or only the last
``window`` keys (``swa``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx, struct

from memarch.layers.norms import RMSNorm
from memarch.layers.rope import apply_rope, segment_positions
from memarch.layers.short_conv import ShortConv
from memarch.mixers._registry import register
from memarch.mixers.protocol import check_call


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    num_kv_heads: int | None = None  # key/value heads; None = num_heads (MHA), fewer = GQA
    head_dim: int | None = None  # per-head width; None = d_model // num_heads
    rope: bool = True  # rotary position embedding on q and k
    rope_base: float = 10000.0  # RoPE frequency base
    qk_norm: bool = False  # RMSNorm on q and k per head (before RoPE)
    window: int | None = None  # keys each query sees (itself included); None = all
    short_conv: int = 0  # causal depthwise conv (kernel size) on q, k, v; 0 disables
    num_heads: int | None = None  # query heads of this layer; None = the model's num_heads
    qkv_bias: bool = False  # learned biases on the q, k and v projections
    norm_eps: float = 1e-6  # epsilon of the q/k RMSNorm (qk_norm); fla's attention uses 1e-5

    def __post_init__(self):
        if self.num_heads is not None and (
            isinstance(self.num_heads, bool)
            or not isinstance(self.num_heads, int)
            or self.num_heads <= 0
        ):
            raise ValueError(
                f"num_heads must be a positive int or None (the model's); got {self.num_heads!r}"
            )
        if isinstance(self.norm_eps, bool) or not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be a float > 0; got {self.norm_eps!r}")
        if self.short_conv < 0:
            raise ValueError(f"short_conv must be >= 0 (0 disables); got {self.short_conv}")
        if self.window is not None and (not isinstance(self.window, int) or self.window <= 0):
            raise ValueError(
                "window must be a positive int (keys each query sees, itself included) "
                f"or None for full attention; got {self.window!r}"
            )
        if self.num_kv_heads is not None and self.num_kv_heads <= 0:
            raise ValueError(
                f"num_kv_heads must be a positive int or None; got {self.num_kv_heads}"
            )
        if self.head_dim is not None and self.head_dim <= 0:
            raise ValueError(f"head_dim must be a positive int or None; got {self.head_dim}")


@dataclasses.dataclass(frozen=True)
class SlidingWindowConfig(AttentionConfig):
    window: int | None = 64  # keys each query sees (itself included); must be > 0

    def __post_init__(self):
        if self.window is None:
            raise ValueError("swa needs a window: a positive int (keys each query sees)")
        super().__post_init__()


@struct.dataclass
class KVCache:
    """Decode cache. ``k, v [B, S, H_kv, d]``; ``pos [S]`` absolute position of each slot
    (−1 = empty); ``length`` tokens seen so far (int32 scalar); ``conv`` the short conv's last
    inputs or None. S = max_len, or the window."""

    k: jax.Array
    v: jax.Array
    pos: jax.Array
    length: jax.Array
    conv: jax.Array | None = None


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked softmax attention with grouped heads, softmax in float32.

    Shapes: ``q [B, T, H, d]``, ``k, v [B, S, H_kv, d]`` (H a multiple of H_kv),
    ``mask [B, T, S]`` (True = may attend) -> ``[B, T, H, d]``.
    """
    b, t, h, d = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, t, hkv, h // hkv, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = logits * d**-0.5
    logits = jnp.where(mask[:, None, None], logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = jnp.where(mask[:, None, None], probs, 0.0)  # rows with no key give 0, not NaN
    out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v)
    return out.reshape(b, t, h, d)


@register("attention", config=AttentionConfig, letter="A")
class Attention(nnx.Module):
    """Causal softmax attention (MHA/GQA) with RoPE and a KV cache; see module docstring."""

    def __init__(self, config: AttentionConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        num_heads = config.num_heads or num_heads
        self.config = config
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_kv_heads = config.num_kv_heads or num_heads
        if num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({num_heads})"
            )
        if config.head_dim is None and d_model % num_heads:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by num_heads ({num_heads}), or set head_dim"
            )
        self.head_dim = config.head_dim or d_model // num_heads
        if config.rope and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim; got {self.head_dim}")
        hd, hkv = self.head_dim, self.num_kv_heads
        bias = config.qkv_bias
        self.q_proj = nnx.Linear(d_model, num_heads * hd, use_bias=bias, rngs=rngs)
        self.k_proj = nnx.Linear(d_model, hkv * hd, use_bias=bias, rngs=rngs)
        self.v_proj = nnx.Linear(d_model, hkv * hd, use_bias=bias, rngs=rngs)
        self.o_proj = nnx.Linear(num_heads * hd, d_model, use_bias=False, rngs=rngs)
        if config.qk_norm:
            self.q_norm = RMSNorm(hd, eps=config.norm_eps, rngs=rngs)
            self.k_norm = RMSNorm(hd, eps=config.norm_eps, rngs=rngs)
        self.conv = (
            ShortConv((num_heads + 2 * hkv) * hd, config.short_conv, rngs=rngs)
            if config.short_conv
            else None
        )

    @property
    def window(self) -> int | None:
        return self.config.window

    def init_cache(self, batch_size: int, max_len: int, dtype=jnp.float32) -> KVCache:
        slots = max_len if self.window is None else min(self.window, max_len)
        shape = (batch_size, slots, self.num_kv_heads, self.head_dim)
        return KVCache(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            pos=jnp.full((slots,), -1, jnp.int32),
            length=jnp.zeros((), jnp.int32),
            conv=None if self.conv is None else self.conv.init_cache(batch_size, dtype),
        )

    def _project(self, x, positions, *, segment_ids=None, conv_cache=None):
        """Returns q ``[B, T, H, d]``, k, v ``[B, T, H_kv, d]`` and the new conv cache."""
        b, t, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.conv is not None:
            qkv, conv_cache = self.conv(
                jnp.concatenate([q, k, v], -1), segment_ids=segment_ids, cache=conv_cache
            )
            q, k, v = jnp.split(qkv, [q.shape[-1], q.shape[-1] + k.shape[-1]], axis=-1)
        q = q.reshape(b, t, self.num_heads, self.head_dim)
        k = k.reshape(b, t, self.num_kv_heads, self.head_dim)
        v = v.reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.config.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.config.rope:
            q = apply_rope(q, positions, base=self.config.rope_base)
            k = apply_rope(k, positions, base=self.config.rope_base)
        return q, k, v, conv_cache

    def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
        """The attention itself (:func:`attend`); subclasses may add keys (e.g. persistent
        memory tokens) here. Shapes as in :func:`attend`."""
        return attend(q, k, v, mask)

    def _visible(self, q_pos: jax.Array, k_pos: jax.Array) -> jax.Array:
        """``[..., T, S]`` bool: key at k_pos is visible to the query at q_pos."""
        qp, kp = q_pos[..., :, None], k_pos[..., None, :]
        ok = (kp >= 0) & (kp <= qp)
        if self.window is not None:
            ok &= kp > qp - self.window
        return ok

    def __call__(
        self, x: jax.Array, *, cache: KVCache | None = None, segment_ids: jax.Array | None = None
    ) -> tuple[jax.Array, KVCache | None]:
        check_call(x, self.d_model, cache, segment_ids)
        b, t, _ = x.shape
        if cache is None:
            if segment_ids is None:
                positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
                mask = self._visible(positions, positions)
            else:
                positions = segment_positions(segment_ids)
                same = segment_ids[:, :, None] == segment_ids[:, None, :]
                idx = jnp.arange(t)
                mask = same & self._visible(idx, idx)[None]
            q, k, v, _ = self._project(x, positions, segment_ids=segment_ids)
            o = self._attend(q, k, v, mask)
            new_cache = None
        else:
            q_pos = cache.length + jnp.arange(t, dtype=jnp.int32)
            q, k, v, conv = self._project(x, jnp.broadcast_to(q_pos, (b, t)), conv_cache=cache.conv)
            k, v = k.astype(cache.k.dtype), v.astype(cache.v.dtype)
            if self.window is None:  # write into the fixed buffer, attend to all of it
                new_cache = KVCache(
                    k=jax.lax.dynamic_update_slice_in_dim(cache.k, k, cache.length, axis=1),
                    v=jax.lax.dynamic_update_slice_in_dim(cache.v, v, cache.length, axis=1),
                    pos=jax.lax.dynamic_update_slice_in_dim(cache.pos, q_pos, cache.length, 0),
                    length=cache.length + t,
                    conv=conv,
                )
                keys, values, k_pos = new_cache.k, new_cache.v, new_cache.pos
            else:  # attend to the window ∪ new tokens, keep the last `window` of them
                keys = jnp.concatenate([cache.k, k], axis=1)
                values = jnp.concatenate([cache.v, v], axis=1)
                k_pos = jnp.concatenate([cache.pos, q_pos])
                s = cache.pos.shape[0]
                new_cache = KVCache(
                    keys[:, -s:], values[:, -s:], k_pos[-s:], cache.length + t, conv
                )
            mask = jnp.broadcast_to(self._visible(q_pos, k_pos), (b, t, k_pos.shape[0]))
            o = self._attend(q.astype(keys.dtype), keys, values, mask).astype(x.dtype)
        y = self.o_proj(o.reshape(b, t, self.num_heads * self.head_dim))
        return y, new_cache


@register("swa", config=SlidingWindowConfig, letter="S")
class SlidingWindowAttention(Attention):
    """Causal attention over the last ``window`` keys; decode keeps only ``window`` keys."""
