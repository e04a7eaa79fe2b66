"""Titans MAC (memory as context), registered as ``titans_mac``.

The sequence is cut into segments of ``segment_size`` tokens (counted from the start of each
packed sequence). For segment n with tokens x_i (i in the segment)::

    h_i = W_h · M*_{n−1}(q_i)            read the memory as it was before the segment,
                                         q_i = L2norm(W_hq x_i) per head (no write)
    y_i = Attn(x_i; [P | h_j, x_j : j ≤ i in the segment])
                                         persistent keys P, then the segment's memory reads
                                         and tokens, causal inside the segment
    m_i = LMM(y_i)                       the memory written with the attention output, read
                                         after the write (token i sees writes of j ≤ i only)
    o_i = W_o(RMSNorm_a(y_i) ⊙ σ(RMSNorm_b(m_i)))

Causality: Titans' ``o = y ⊗ M*_t(y)`` reads the memory at the end of the segment, which would
leak later tokens of the segment; here every token reads the memory after its own write (the
memory's read-after-write), and h_i only reads the memory of the previous segments.
The attention has no positional encoding (order comes from causality and the memory's conv).

Forms: without a cache or packing, a loop over segments (attention parallel inside each, the
memory's chunked form for the write). With a cache (prefill, decode) or ``segment_ids``: a
``lax.scan`` over tokens whose step is the decode step. ``segment_size`` must be a multiple of
the memory's ``chunk_size``. Decode cache: :class:`MACCache`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from memarch.layers.norms import RMSNorm, l2_normalize
from memarch.memory import MemoryState, memory_read
from memarch.mixers._registry import register
from memarch.mixers.attention import attend
from memarch.mixers.protocol import check_call
from memarch.mixers.titans import MemoryCache, NeuralMemory, TitansLMMConfig


@dataclasses.dataclass(frozen=True)
class TitansMACConfig(TitansLMMConfig):
    """The memory's fields (see :class:`TitansLMMConfig`) plus the segment attention."""

    segment_size: int = 64  # tokens per segment (Titans: 512); a multiple of chunk_size
    persistent_tokens: int = 4  # learned key/value slots every query attends to (Titans: 128)

    def __post_init__(self):
        super().__post_init__()
        if (
            not isinstance(self.segment_size, int)
            or self.segment_size <= 0
            or self.segment_size % self.chunk_size
        ):
            raise ValueError(
                f"segment_size must be a positive multiple of chunk_size ({self.chunk_size}); "
                f"got {self.segment_size!r}"
            )
        if self.persistent_tokens < 0:
            raise ValueError(f"persistent_tokens must be >= 0; got {self.persistent_tokens}")


@struct.dataclass
class MACCache:
    """``memory`` the LMM's cache; ``start`` the memory at the segment start (leaves
    ``[B, H, ...]``); ``k, v [B, 2, S, H, d]`` the segment's keys/values (memory reads, tokens);
    ``pos [B]`` int32 tokens since the sequence start."""

    memory: MemoryCache
    start: Any
    k: jax.Array
    v: jax.Array
    pos: jax.Array


@register("titans_mac", config=TitansMACConfig)
class TitansMAC(nnx.Module):
    """Memory as context: segment attention over [persistent | memory reads | segment]."""

    def __init__(self, config: TitansMACConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        self.config = config
        self.d_model = d_model
        self.memory = NeuralMemory(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        self.num_heads = h = num_heads
        self.head_dim = d = self.memory.head_dim
        lin = lambda i, o: nnx.Linear(i, o, use_bias=False, rngs=rngs)  # noqa: E731
        self.hq_proj = lin(d_model, h * d)  # memory-read queries
        self.h_proj = lin(h * d, d_model)  # memory reads back to the model width
        self.q_proj, self.k_proj, self.v_proj = (
            lin(d_model, h * d),
            lin(d_model, h * d),
            lin(d_model, h * d),
        )
        self.attn_o = lin(h * d, d_model)
        n_p = config.persistent_tokens
        self.pk = nnx.Param(jax.random.normal(rngs.params(), (n_p, h, d), jnp.float32))
        self.pv = nnx.Param(0.02 * jax.random.normal(rngs.params(), (n_p, h, d), jnp.float32))
        self.norm_attn = RMSNorm(d_model, rngs=rngs)
        self.norm_mem = RMSNorm(d_model, rngs=rngs)
        self.o_proj = lin(d_model, d_model)

    # --- pieces -------------------------------------------------------------------------------
    def _heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def _read(self, start: Any, x: jax.Array) -> jax.Array:
        """h = W_h M*(q) at the segment-start memory ``start``; ``x [B, T, D] -> [B, T, D]``."""
        q = l2_normalize(self._heads(self.hq_proj(x)))
        r = memory_read(self.memory.spec, start, q)
        return self.h_proj(r.reshape(*x.shape[:-1], -1))

    def _persistent(self, b: int, dtype):
        pk = jnp.broadcast_to(self.pk[...].astype(dtype), (b, *self.pk.shape))
        pv = jnp.broadcast_to(self.pv[...].astype(dtype), (b, *self.pv.shape))
        return pk, pv

    def _combine(self, y: jax.Array, m: jax.Array) -> jax.Array:
        return self.o_proj(self.norm_attn(y) * jax.nn.sigmoid(self.norm_mem(m)))

    # --- cache ---------------------------------------------------------------------------------
    def init_cache(self, batch_size: int, max_len: int, dtype: Any = jnp.float32) -> MACCache:
        mem = self.memory.init_cache(batch_size, max_len, dtype)
        s, h, d = self.config.segment_size, self.num_heads, self.head_dim
        buf = jnp.zeros((batch_size, 2, s, h, d), dtype)
        return MACCache(mem, mem.state.memory, buf, buf, jnp.zeros((batch_size,), jnp.int32))

    # --- forms ---------------------------------------------------------------------------------
    def _segments(self, x: jax.Array) -> jax.Array:
        """Whole sequences from the start: segment loop (attention parallel in a segment)."""
        b, t, _ = x.shape
        s = self.config.segment_size
        mem = self.memory.init_cache(b, t, x.dtype)
        pk, pv = self._persistent(b, x.dtype)
        outs = []
        for start in range(0, t, s):
            xs = x[:, start : start + s]
            n = xs.shape[1]
            hs = self._read(mem.state.memory, xs)
            q = self._heads(self.q_proj(xs))
            keys = jnp.concatenate(
                [pk, self._heads(self.k_proj(hs)), self._heads(self.k_proj(xs))], 1
            )
            vals = jnp.concatenate(
                [pv, self._heads(self.v_proj(hs)), self._heads(self.v_proj(xs))], 1
            )
            causal = jnp.tril(jnp.ones((n, n), bool))
            mask = jnp.concatenate([jnp.ones((n, pk.shape[1]), bool), causal, causal], axis=1)
            o = attend(q, keys, vals, jnp.broadcast_to(mask, (b, *mask.shape)))
            y = self.attn_o(o.reshape(b, n, -1))
            m, mem = self.memory(y, cache=mem)
            outs.append(self._combine(y, m))
        return jnp.concatenate(outs, axis=1)

    def _step(self, cache: MACCache, x_t: jax.Array, reset: jax.Array):
        """One token ``x_t [B, D]``; ``reset [B]`` starts a new sequence in that row."""
        b = x_t.shape[0]
        s = self.config.segment_size
        fresh = self.memory.init_cache(b, s, x_t.dtype)

        def rows(new, old):
            return jax.tree.map(
                lambda a, o: jnp.where(reset.reshape((b,) + (1,) * (o.ndim - 1)), a, o), new, old
            )

        mem_state = rows(fresh.state, cache.memory.state)
        conv = None if cache.memory.conv is None else rows(fresh.conv, cache.memory.conv)
        pos = jnp.where(reset, 0, cache.pos)
        slot = pos % s
        new_seg = slot == 0
        start = jax.tree.map(
            lambda a, o: jnp.where(new_seg.reshape((b,) + (1,) * (o.ndim - 1)), a, o),
            mem_state.memory,
            cache.start,
        )
        h_t = self._read(start, x_t[:, None])[:, 0]
        kx, vx = self._heads(self.k_proj(x_t)), self._heads(self.v_proj(x_t))
        kh, vh = self._heads(self.k_proj(h_t)), self._heads(self.v_proj(h_t))
        put = jax.vmap(lambda buf, i, new: buf.at[:, i].set(new))  # buf [2, S, H, d]
        kbuf = put(cache.k, slot, jnp.stack([kh, kx], 1).astype(cache.k.dtype))
        vbuf = put(cache.v, slot, jnp.stack([vh, vx], 1).astype(cache.v.dtype))
        pk, pv = self._persistent(b, kbuf.dtype)
        h, d = self.num_heads, self.head_dim
        keys = jnp.concatenate([pk, kbuf.reshape(b, 2 * s, h, d)], 1)
        vals = jnp.concatenate([pv, vbuf.reshape(b, 2 * s, h, d)], 1)
        seen = jnp.arange(s)[None] <= slot[:, None]  # [B, S]
        mask = jnp.concatenate([jnp.ones((b, pk.shape[1]), bool), seen, seen], 1)[:, None]
        q = self._heads(self.q_proj(x_t))[:, None]
        y = self.attn_o(attend(q.astype(keys.dtype), keys, vals, mask).reshape(b, 1, -1))
        mem_cache = MemoryCache(state=mem_state, conv=conv, length=cache.memory.length)
        m, mem_cache = self.memory(y.astype(x_t.dtype), cache=mem_cache)
        o = self._combine(y, m)[:, 0]
        return MACCache(mem_cache, start, kbuf, vbuf, pos + 1), o

    def _tokens(self, x: jax.Array, cache: MACCache, resets: jax.Array):
        """``lax.scan`` of :meth:`_step` over the tokens of ``x [B, T, D]``."""
        graphdef, params = nnx.split(self)

        def body(c, inp):
            x_t, r_t = inp
            return nnx.merge(graphdef, params)._step(c, x_t, r_t)

        cache, o = jax.lax.scan(body, cache, (jnp.swapaxes(x, 0, 1), jnp.swapaxes(resets, 0, 1)))
        return jnp.swapaxes(o, 0, 1), cache

    def __call__(
        self,
        x: jax.Array,
        *,
        cache: MACCache | None = None,
        segment_ids: jax.Array | None = None,
    ):
        check_call(x, self.d_model, cache, segment_ids)
        b, t, _ = x.shape
        if cache is None and segment_ids is None:
            return self._segments(x), None
        if segment_ids is not None:
            prev = jnp.concatenate([segment_ids[:, :1], segment_ids[:, :-1]], axis=1)
            resets = segment_ids != prev
            o, _ = self._tokens(x, self.init_cache(b, t, x.dtype), resets)
            return o, None
        o, cache = self._tokens(x, cache, jnp.zeros((b, t), bool))
        return o, cache


# MemoryState is part of MACCache.memory; re-exported for type checkers reading this module.
__all__ = ["MACCache", "MemoryState", "TitansMAC", "TitansMACConfig"]
