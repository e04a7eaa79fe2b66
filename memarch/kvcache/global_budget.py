"""One KV budget shared by every layer and KV head ("Make Each Token Count", arXiv 2605.09649).

Each (layer, KV head) keeps a fixed buffer of C slots (its cap, enforced by the layer's own
:class:`memarch.kvcache.RetentionEviction` with ``budget = C``). After every model call,
:func:`global_keep` ranks every occupied slot of every layer and head by its retention score
``(t_next − pos_i)·log β_i`` and frees all but the ``budget`` best (position −1), so heads end
up with different numbers of keys and the total never exceeds the budget. Shapes stay fixed
(jit-friendly); freed slots are refilled first by the next call.

Decoding under a global budget: give the decay-attention layers
:class:`memarch.kvcache.GlobalRetentionEviction` (``budget`` = the cap C, ``total`` = the
global budget) and call :func:`keep_global` on the model's list of layer caches after every
model call (:func:`memarch.eval.kv_budget.decode_logits` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from memarch.kvcache.cache import RetentionKVCache


def retention_scores(cache: RetentionKVCache) -> jax.Array:
    """``(t_next − pos_i)·log β_i`` per slot ``[B, S, H_kv]``; −∞ for empty slots."""
    s = (cache.length - cache.pos).astype(jnp.float32) * cache.slope
    return jnp.where(cache.pos >= 0, s, -jnp.inf)


def global_keep(caches: Sequence[RetentionKVCache], budget: int) -> list[RetentionKVCache]:
    """Keeps the ``budget`` slots of highest retention score across all caches and KV heads
    (per batch row); every other slot is emptied. Requires ``budget ≤`` total slots."""
    total = sum(c.slots * c.pos.shape[2] for c in caches)
    if not isinstance(budget, int) or budget <= 0 or budget > total:
        raise ValueError(f"budget must be an int in [1, {total}] (total slots); got {budget!r}")
    flat = [retention_scores(c).reshape(c.pos.shape[0], -1) for c in caches]
    scores = jnp.concatenate(flat, axis=1)  # [B, Σ S·H_kv]
    _, idx = jax.lax.top_k(scores, budget)
    keep = jnp.zeros(scores.shape, bool).at[jnp.arange(scores.shape[0])[:, None], idx].set(True)
    keep &= scores > -jnp.inf
    out, start = [], 0
    for c in caches:
        n = c.slots * c.pos.shape[2]
        kc = keep[:, start : start + n].reshape(c.pos.shape)
        out.append(c.replace(pos=jnp.where(kc, c.pos, -1)))
        start += n
    return out


def keep_global(caches: Sequence, total: int) -> list:
    """:func:`global_keep` over the :class:`RetentionKVCache` entries of a model's list of
    layer caches (``LM.init_cache``); other layers' caches pass through unchanged."""
    idx = [i for i, c in enumerate(caches) if isinstance(c, RetentionKVCache)]
    if not idx:
        raise ValueError("keep_global needs at least one RetentionKVCache (fox / trimkv layer)")
    kept = global_keep([caches[i] for i in idx], total)
    out = list(caches)
    for i, c in zip(idx, kept, strict=True):
        out[i] = c
    return out


def total_kept(caches: Sequence[RetentionKVCache]) -> jax.Array:
    """int32 ``[B]``: occupied slots over every layer and KV head."""
    return sum(jnp.sum(c.pos >= 0, axis=(1, 2)) for c in caches)
