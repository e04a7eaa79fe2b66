"""Titans' memory + attention variants: ``titans_mag`` (memory as a gate) and ``titans_mal``
(memory as a layer), with persistent memory tokens.

- **MAG**: sliding-window attention and the long-term memory read the same input in parallel;
  ``o = W_o(RMSNorm_a(y_attn) ⊙ σ(RMSNorm_b(y_mem)))`` (Titans' ⊗: both branches normalised
  with learned scales, then a sigmoid gate).
- **MAL**: ``o = SWA(LMM(x))`` — the memory first, then sliding-window attention over its output.

Persistent memory: ``persistent_tokens`` learned key/value pairs per attention head that every
query sees (the attention part of prepending P to the sequence; the memory branch starts from
its learned initial weights instead of writing P, which keeps packed sequences independent).
The memory is :class:`memarch.mixers.titans.NeuralMemory` with this config's memory fields
(Titans' MLP memory, momentum and decay by default). Decode cache: :class:`HybridCache`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx, struct

from memarch.layers.norms import RMSNorm
from memarch.mixers._registry import register
from memarch.mixers.attention import SlidingWindowAttention, SlidingWindowConfig, attend
from memarch.mixers.protocol import check_call
from memarch.mixers.titans import NeuralMemory, TitansLMMConfig


@dataclasses.dataclass(frozen=True)
class TitansHybridConfig(TitansLMMConfig):
    """The memory's fields (see :class:`TitansLMMConfig`) plus the attention branch."""

    window: int = 64  # keys each query sees in the sliding-window attention (itself included)
    persistent_tokens: int = 4  # learned key/value slots every query attends to (Titans: 128)
    rope: bool = True  # rotary embedding in the attention branch

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.window, int) or self.window <= 0:
            raise ValueError(f"window must be a positive int; got {self.window!r}")
        if self.persistent_tokens < 0:
            raise ValueError(f"persistent_tokens must be >= 0; got {self.persistent_tokens}")


class PersistentSWA(SlidingWindowAttention):
    """Sliding-window attention whose queries also see ``persistent`` learned key/value pairs
    per kv head (``pk, pv [N_p, H_kv, d]``, position-free)."""

    def __init__(
        self,
        config: SlidingWindowConfig,
        *,
        d_model: int,
        num_heads: int,
        persistent: int,
        rngs: nnx.Rngs,
    ):
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        self.persistent = persistent
        shape = (persistent, self.num_kv_heads, self.head_dim)
        self.pk = nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32))
        self.pv = nnx.Param(0.02 * jax.random.normal(rngs.params(), shape, jnp.float32))

    def _attend(self, q, k, v, mask):
        if not self.persistent:
            return attend(q, k, v, mask)
        b, t = q.shape[:2]
        pk = jnp.broadcast_to(self.pk[...].astype(k.dtype), (b, *self.pk.shape))
        pv = jnp.broadcast_to(self.pv[...].astype(v.dtype), (b, *self.pv.shape))
        seen = jnp.ones((b, t, self.persistent), bool)
        return attend(
            q,
            jnp.concatenate([pk, k], axis=1),
            jnp.concatenate([pv, v], axis=1),
            jnp.concatenate([seen, mask], axis=-1),
        )


@struct.dataclass
class HybridCache:
    """The attention branch's ``KVCache`` and the memory's ``MemoryCache``."""

    attn: object
    memory: object


class _TitansHybrid(nnx.Module):
    def __init__(self, config: TitansHybridConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        self.config = config
        self.d_model = d_model
        self.memory = NeuralMemory(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        swa = SlidingWindowConfig(window=config.window, rope=config.rope)
        self.attn = PersistentSWA(
            swa,
            d_model=d_model,
            num_heads=num_heads,
            persistent=config.persistent_tokens,
            rngs=rngs,
        )

    def init_cache(self, batch_size: int, max_len: int, dtype=jnp.float32) -> HybridCache:
        return HybridCache(
            attn=self.attn.init_cache(batch_size, max_len, dtype),
            memory=self.memory.init_cache(batch_size, max_len, dtype),
        )


@register("titans_mag", config=TitansHybridConfig)
class TitansMAG(_TitansHybrid):
    """Memory as a gate: SWA and the memory in parallel, combined by a normalised gate."""

    def __init__(self, config: TitansHybridConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        self.norm_attn = RMSNorm(d_model, rngs=rngs)
        self.norm_mem = RMSNorm(d_model, rngs=rngs)
        self.o_proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

    def __call__(self, x, *, cache: HybridCache | None = None, segment_ids=None):
        check_call(x, self.d_model, cache, segment_ids)
        ya, ca = self.attn(x, cache=None if cache is None else cache.attn, segment_ids=segment_ids)
        ym, cm = self.memory(
            x, cache=None if cache is None else cache.memory, segment_ids=segment_ids
        )
        y = self.o_proj(self.norm_attn(ya) * jax.nn.sigmoid(self.norm_mem(ym)))
        return y, (None if cache is None else HybridCache(ca, cm))


@register("titans_mal", config=TitansHybridConfig)
class TitansMAL(_TitansHybrid):
    """Memory as a layer: the memory, then sliding-window attention over its output."""

    def __call__(self, x, *, cache: HybridCache | None = None, segment_ids=None):
        check_call(x, self.d_model, cache, segment_ids)
        ym, cm = self.memory(
            x, cache=None if cache is None else cache.memory, segment_ids=segment_ids
        )
        y, ca = self.attn(ym, cache=None if cache is None else cache.attn, segment_ids=segment_ids)
        return y, (None if cache is None else HybridCache(ca, cm))
