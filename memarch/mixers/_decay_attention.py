"""Shared body of the decay-biased attention mixers (FoX, TRIM-KV): projections as in
:class:`memarch.mixers.attention.Attention`, the op :func:`memarch.ops.decay_attention`, and
decoding with a :class:`memarch.kvcache.RetentionKVCache`, optionally under a KV budget.

Subclasses define ``_gates(x) -> (log_fgate [B, T, H] | None, log_beta [B, T, H_kv] | None)``
and ``_bias_slope(log_beta)`` (the slope actually added to the logits, or None).

Decoding: without ``eviction`` the cache holds every key (``max_len`` slots; the last
``window`` with a window). With ``eviction`` (an :class:`memarch.kvcache.EvictionPolicy`)
it holds ``M = min(budget, max_len)`` keys per KV head: each call appends the new tokens,
attends over the ``M + T`` keys, and keeps the M of highest policy score. A call materialises
``T × (M + T)`` logits, so prefill a long prompt under a budget in chunks (each call evicts);
SnapKV then sees the last chunk as its observation window.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from memarch.kvcache import cache as kvc
from memarch.kvcache.policies import EvictionPolicy
from memarch.layers.rope import segment_positions
from memarch.mixers.attention import Attention, AttentionConfig
from memarch.mixers.protocol import check_call
from memarch.ops import IMPLS, check_impl, decay_attention, decay_attention_cached


@dataclasses.dataclass(frozen=True)
class DecayAttentionConfig(AttentionConfig):
    eviction: EvictionPolicy | None = None  # budgeted decode cache; None = keep every key
    block_size: int = 64  # key block of the chunked (blockwise) op and of the pallas kernel
    impl: str = "auto"  # decay_attention impl: naive | chunk (blockwise) | pallas | auto

    def __post_init__(self):
        super().__post_init__()
        check_impl(self.impl, IMPLS)
        if not isinstance(self.block_size, int) or self.block_size <= 0:
            raise ValueError(f"block_size must be a positive int; got {self.block_size!r}")
        if self.eviction is not None and not isinstance(self.eviction, EvictionPolicy):
            raise ValueError(
                "eviction must be an EvictionPolicy (memarch.kvcache.make_policy(name, budget=…)) "
                f"or None; got {self.eviction!r}"
            )


class DecayAttention(Attention):
    """Attention with the additive bias ``Λ_t − Λ_i + (t − i)·a_i``; see module docstring."""

    config: DecayAttentionConfig

    def _gates(self, x: jax.Array) -> tuple[jax.Array | None, jax.Array | None]:
        raise NotImplementedError

    def _bias_slope(self, log_beta: jax.Array | None) -> jax.Array | None:
        return log_beta

    def _decode_bias_slope(self, log_beta: jax.Array) -> jax.Array | None:
        """The slope added to the logits while decoding (default: as in training)."""
        return self._bias_slope(log_beta)

    def _on_train_forward(self, log_beta, segment_ids) -> None:
        """Hook for training-time side outputs (e.g. a sown capacity loss)."""

    def init_cache(self, batch_size: int, max_len: int, dtype=jnp.float32) -> kvc.RetentionKVCache:
        slots = max_len
        if self.config.eviction is not None:
            slots = min(self.config.eviction.budget, max_len)
        elif self.window is not None:
            slots = min(self.window, max_len)
        log_f, _ = self._gate_kinds()
        return kvc.empty_cache(
            batch_size,
            slots,
            self.num_kv_heads,
            self.head_dim,
            group=self.num_heads // self.num_kv_heads,
            forget_gate=log_f,
            dtype=dtype,
            conv=None if self.conv is None else self.conv.init_cache(batch_size, dtype),
        )

    def _gate_kinds(self) -> tuple[bool, bool]:
        """(has a forget gate, has a retention slope)."""
        raise NotImplementedError

    def __call__(self, x, *, cache=None, segment_ids=None):
        check_call(x, self.d_model, cache, segment_ids)
        b, t, _ = x.shape
        log_f, log_beta = self._gates(x)
        if cache is None:
            positions = (
                jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
                if segment_ids is None
                else segment_positions(segment_ids)
            )
            q, k, v, _ = self._project(x, positions, segment_ids=segment_ids)
            self._on_train_forward(log_beta, segment_ids)
            o = decay_attention(
                q,
                k,
                v,
                log_f,
                self._bias_slope(log_beta),
                window=self.window,
                segment_ids=segment_ids,
                impl=self.config.impl,
                block_size=self.config.block_size,
            )
            new_cache = None
        else:
            o, new_cache = self._decode(x, cache, log_f, log_beta)
        y = self.o_proj(o.reshape(b, t, self.num_heads * self.head_dim))
        return y, new_cache

    def _decode(self, x, cache: kvc.RetentionKVCache, log_f, log_beta):
        b, t, _ = x.shape
        hkv, g = self.num_kv_heads, self.num_heads // self.num_kv_heads
        q_pos = cache.length + jnp.arange(t, dtype=jnp.int32)
        qb_pos = jnp.broadcast_to(q_pos, (b, t))
        q, k, v, conv = self._project(x, qb_pos, conv_cache=cache.conv)
        slope = jnp.zeros((b, t, hkv), jnp.float32) if log_beta is None else log_beta
        new = dict(
            k=k.astype(cache.k.dtype),
            v=v.astype(cache.v.dtype),
            pos=jnp.broadcast_to(q_pos[None, :, None], (b, t, hkv)),
            slope=slope,
            stat=jnp.zeros((b, t, hkv), jnp.float32),
            lam=None,
        )
        q_lam, lam_last = None, cache.lam_last
        if log_f is not None:
            lf = log_f.astype(jnp.float32).reshape(b, t, hkv, g)
            q_lam = cache.lam_last[:, None] + jnp.cumsum(lf, axis=1)
            new["lam"], lam_last = q_lam, q_lam[:, -1]
        policy = self.config.eviction
        full = cache.slots
        if policy is None and self.window is None:
            ext = kvc.write_at_length(cache, new)
        else:
            ext = kvc.concat_new(cache, new)
        bias_slope = self._decode_bias_slope(ext.slope)
        o, probs = decay_attention_cached(
            q.astype(ext.k.dtype),
            ext.k,
            ext.v,
            qb_pos,
            ext.pos,
            q_lam=q_lam,
            k_lam=ext.lam,
            k_slope=None
            if bias_slope is None
            else jnp.broadcast_to(bias_slope[..., None], bias_slope.shape + (g,)),
            window=self.window,
        )
        t_next = cache.length + t
        if policy is not None:
            scores, stat = policy.scores(ext, probs, t_next, t > 1)
            ext = kvc.keep_top(ext.replace(stat=stat), scores, full)
        elif self.window is not None:
            ext = kvc.keep_last(ext, full)
        return o.astype(x.dtype), ext.replace(length=t_next, lam_last=lam_last, conv=conv)
