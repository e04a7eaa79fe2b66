"""The KV cache of decay-biased attention (FoX, TRIM-KV), with fixed-size buffers.

Every per-key array is laid out ``[B, S, H_kv, ...]`` with S fixed (``max_len`` without a
budget, the budget M with one), so the cache is a jit- and scan-friendly pytree. Slots are
independent per (batch row, KV head) — eviction may keep different keys in different heads —
and a slot is empty when its position is −1. Keys are stored after RoPE, so the order of the
slots is irrelevant to attention.

Budgeted decoding (``buffer = 1`` in TRIM-KV terms, generalised to T new tokens): the new
tokens are appended to the M kept ones, the queries attend over the ``M + T`` keys, then
:func:`keep_top` keeps the M keys of highest score per (batch row, KV head).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RetentionKVCache:
    """Decode cache of :mod:`memarch.mixers.fox` / :mod:`memarch.mixers.trimkv`.

    Fields:
      k, v: ``[B, S, H_kv, d]`` keys (post-RoPE) and values.
      pos: int32 ``[B, S, H_kv]`` absolute position of each slot's token (−1 = empty).
      slope: float32 ``[B, S, H_kv]`` per-key log retention ``log β_i`` (0 without gates).
      stat: float32 ``[B, S, H_kv]`` the eviction policy's running per-key statistic
        (e.g. H2O's accumulated attention); 0 when unused.
      lam: float32 ``[B, S, H_kv, G]`` Λ_i, the cumulative log forget gate at each key per
        query head of its group (FoX), or None.
      lam_last: float32 ``[B, H_kv, G]`` Λ of the last token seen (FoX), or None.
      length: int32 scalar, tokens seen so far.
      conv: the short convolution's cache, or None.
    """

    k: jax.Array
    v: jax.Array
    pos: jax.Array
    slope: jax.Array
    stat: jax.Array
    lam: jax.Array | None
    lam_last: jax.Array | None
    length: jax.Array
    conv: jax.Array | None = None

    @property
    def slots(self) -> int:
        return self.pos.shape[1]

    def num_kept(self) -> jax.Array:
        """int32 ``[B, H_kv]``: occupied slots per (batch row, KV head)."""
        return jnp.sum(self.pos >= 0, axis=1)


def empty_cache(
    batch_size: int,
    slots: int,
    num_kv_heads: int,
    head_dim: int,
    *,
    group: int,
    forget_gate: bool,
    dtype=jnp.float32,
    conv: jax.Array | None = None,
) -> RetentionKVCache:
    """An empty cache of ``slots`` per (batch row, KV head); ``group`` = query heads per KV
    head; ``forget_gate`` adds the Λ buffers (FoX)."""
    b, s, h = batch_size, slots, num_kv_heads
    return RetentionKVCache(
        k=jnp.zeros((b, s, h, head_dim), dtype),
        v=jnp.zeros((b, s, h, head_dim), dtype),
        pos=jnp.full((b, s, h), -1, jnp.int32),
        slope=jnp.zeros((b, s, h), jnp.float32),
        stat=jnp.zeros((b, s, h), jnp.float32),
        lam=jnp.zeros((b, s, h, group), jnp.float32) if forget_gate else None,
        lam_last=jnp.zeros((b, h, group), jnp.float32) if forget_gate else None,
        length=jnp.zeros((), jnp.int32),
        conv=conv,
    )


_SLOT_FIELDS = ("k", "v", "pos", "slope", "stat", "lam")


def concat_new(cache: RetentionKVCache, new: dict[str, jax.Array | None]) -> RetentionKVCache:
    """Appends T new keys after the S slots (``new`` holds the ``_SLOT_FIELDS`` arrays with T in
    place of S); the result has ``S + T`` slots and the same ``length``."""
    upd = {
        f: None if getattr(cache, f) is None else jnp.concatenate([getattr(cache, f), new[f]], 1)
        for f in _SLOT_FIELDS
    }
    return cache.replace(**upd)


def write_at_length(cache: RetentionKVCache, new: dict[str, jax.Array | None]) -> RetentionKVCache:
    """Writes T new keys into slots ``[length, length + T)`` (a full cache without eviction)."""
    upd = {}
    for f in _SLOT_FIELDS:
        old = getattr(cache, f)
        if old is not None:
            upd[f] = jax.lax.dynamic_update_slice_in_dim(
                old, new[f].astype(old.dtype), cache.length, axis=1
            )
    return cache.replace(**upd)


def keep_last(cache: RetentionKVCache, slots: int) -> RetentionKVCache:
    """Keeps the last ``slots`` slots (a sliding window after :func:`concat_new`)."""
    upd = {f: getattr(cache, f)[:, -slots:] for f in _SLOT_FIELDS if getattr(cache, f) is not None}
    return cache.replace(**upd)


def top_slots(scores: jax.Array, pos: jax.Array, budget: int) -> jax.Array:
    """int32 ``[B, M, H_kv]``: the M slots of highest score per (batch row, KV head), in slot
    order. Empty slots (pos < 0) score −∞, so they are taken only when fewer than M keys exist.
    ``scores, pos [B, S, H_kv]``; requires M ≤ S."""
    s = jnp.where(pos >= 0, scores.astype(jnp.float32), -jnp.inf)
    _, idx = jax.lax.top_k(jnp.swapaxes(s, 1, 2), budget)  # [B, H_kv, M]
    return jnp.swapaxes(jnp.sort(idx, axis=-1), 1, 2)


def gather_slots(cache: RetentionKVCache, idx: jax.Array) -> RetentionKVCache:
    """The cache restricted to slots ``idx [B, M, H_kv]`` (per batch row and KV head)."""

    def take(x):
        i = idx.reshape(idx.shape + (1,) * (x.ndim - 3))
        return jnp.take_along_axis(x, i, axis=1)

    upd = {f: take(getattr(cache, f)) for f in _SLOT_FIELDS if getattr(cache, f) is not None}
    return cache.replace(**upd)


def keep_top(cache: RetentionKVCache, scores: jax.Array, budget: int) -> RetentionKVCache:
    """Keeps the ``budget`` keys of highest ``scores [B, S, H_kv]`` per (batch row, KV head)."""
    if budget > cache.slots:
        raise ValueError(f"budget ({budget}) exceeds the cache's {cache.slots} slots")
    return gather_slots(cache, top_slots(scores, cache.pos, budget))
