"""Eviction policies for a budgeted KV cache, behind one interface.

After every forward call on a budgeted cache, the new tokens have been appended to the kept
ones (``S' = M + T`` slots) and the queries have attended over them. The policy then scores
every slot, and the cache keeps the M slots of highest score per (batch row, KV head)
(:func:`memarch.kvcache.cache.keep_top`). Scores are computed from the slots' positions,
retention slopes, a running per-key statistic, and the new queries' attention weights
``probs [B, H_kv, G, T, S']`` (float32; GQA query heads are averaged, the usual reduction).

=================  ==========================================================================
name               score of key i (higher = kept)
=================  ==========================================================================
``trimkv``         ``(t_next − pos_i)·log β_i``: the key's retention at the next step (TRIM-KV)
``streaming_llm``  ``+∞`` for the first ``sinks`` positions, else ``pos_i`` (the most recent)
``h2o``            accumulated attention ``Σ_q a_{q,i}``; the ``recent`` newest keys are kept
``snapkv``         after prefill: attention from the last ``window`` prompt queries, summed and
                   average-pooled over keys (kernel ``kernel``); the window itself is kept;
                   tokens decoded later enter above every prompt key, newest first
``tova``           the newest query's attention, averaged over all heads of the layer (one
                   token set per layer)
``trimkv_global``  as ``trimkv`` within a (layer, KV head) buffer of ``budget`` slots; after
                   each model call one top-``total`` over every layer and KV head
                   (:mod:`memarch.kvcache.global_budget`, "Make Each Token Count")
=================  ==========================================================================

``t_next`` is the position of the next token to come (``length`` after the call).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from memarch.kvcache.cache import RetentionKVCache
from memarch.registry import Registry, build_options

_BIG = 1e6  # SnapKV: decode-time tokens rank above every prompt key (prompt scores ≤ window)


def _check_budget(budget) -> None:
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise ValueError(f"budget must be a positive int (KV entries per head); got {budget!r}")


def _group_mean(probs: jax.Array) -> jax.Array:
    """``[B, H_kv, G, T, S] -> [B, T, S, H_kv]`` averaged over the G query heads of a group."""
    return jnp.transpose(jnp.mean(probs, axis=2), (0, 2, 3, 1))


@dataclasses.dataclass(frozen=True)
class EvictionPolicy:
    """Base class: ``budget`` M kept keys per (batch row, KV head, layer).

    ``scores(cache, probs, t_next, prefill) -> (scores, stat)``: ``cache`` has the new tokens
    appended (S' slots); returns the score of each slot ``[B, S', H_kv]`` and the updated
    running statistic to store (same shape).
    """

    name: ClassVar[str] = ""
    budget: int = 1024

    def __post_init__(self):
        _check_budget(self.budget)

    def scores(
        self, cache: RetentionKVCache, probs: jax.Array, t_next: jax.Array, prefill: bool
    ) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class RetentionEviction(EvictionPolicy):
    """TRIM-KV: evict the lowest ``(t_next − pos_i)·log β_i``; ``recent`` newest keys kept."""

    name: ClassVar[str] = "trimkv"
    recent: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.recent, int) or not 0 <= self.recent <= self.budget:
            raise ValueError(
                f"recent must be an int in [0, budget={self.budget}]; got {self.recent!r}"
            )

    def scores(self, cache, probs, t_next, prefill):
        s = (t_next - cache.pos).astype(jnp.float32) * cache.slope
        s = jnp.where(cache.pos >= t_next - self.recent, jnp.inf, s)
        return s, cache.stat


@dataclasses.dataclass(frozen=True)
class GlobalRetentionEviction(RetentionEviction):
    """TRIM-KV under one budget ``total`` shared by every layer and KV head ("Make Each Token
    Count", arXiv 2605.09649). ``budget`` is now each (layer, KV head)'s buffer (its cap): the
    layer evicts within it as :class:`RetentionEviction` does; the decoding loop then keeps
    the ``total`` keys of highest ``(t_next − pos_i)·log β_i`` across all of them
    (:func:`memarch.kvcache.global_budget.keep_global`), so heads hold different numbers of
    keys and ``Σ_{l,h} kept ≤ total``.
    """

    name: ClassVar[str] = "trimkv_global"
    total: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.total, int) or isinstance(self.total, bool) or self.total <= 0:
            raise ValueError(
                f"total must be a positive int (KV entries over all layers and KV heads); "
                f"got {self.total!r}"
            )


@dataclasses.dataclass(frozen=True)
class StreamingLLM(EvictionPolicy):
    """Keep the first ``sinks`` tokens and the most recent ``budget − sinks`` tokens."""

    name: ClassVar[str] = "streaming_llm"
    sinks: int = 4

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.sinks, int) or self.sinks < 0:
            raise ValueError(f"sinks must be an int >= 0; got {self.sinks!r}")
        if self.budget < self.sinks:
            raise ValueError(
                f"budget ({self.budget}) must be at least the number of sink tokens ({self.sinks})"
            )
        if self.budget - self.sinks <= 0:
            raise ValueError(
                f"the recent window budget − sinks = {self.budget - self.sinks} must be > 0"
            )

    def scores(self, cache, probs, t_next, prefill):
        s = jnp.where(cache.pos < self.sinks, jnp.inf, cache.pos.astype(jnp.float32))
        return s, cache.stat


@dataclasses.dataclass(frozen=True)
class H2O(EvictionPolicy):
    """Heavy hitters: accumulated attention ``Σ_{q ≥ i} a_{q,i}`` plus the ``recent`` newest
    keys (default: half the budget)."""

    name: ClassVar[str] = "h2o"
    recent: int | None = None

    @property
    def recent_window(self) -> int:
        return self.budget // 2 if self.recent is None else self.recent

    def __post_init__(self):
        super().__post_init__()
        r = self.recent_window
        if not isinstance(r, int) or r <= 0:
            raise ValueError(f"recent window must be > 0; got {r!r} (budget {self.budget})")
        if r >= self.budget:
            raise ValueError(
                f"recent ({r}) must be < budget ({self.budget}) to leave room for heavy hitters"
            )

    def scores(self, cache, probs, t_next, prefill):
        stat = cache.stat + jnp.sum(_group_mean(probs), axis=1)
        s = jnp.where(cache.pos >= t_next - self.recent_window, jnp.inf, stat)
        return s, stat


@dataclasses.dataclass(frozen=True)
class SnapKV(EvictionPolicy):
    """Once after prefill: attention of the last ``window`` prompt queries, summed, then
    average-pooled over keys with an odd ``kernel``; the observation window is kept."""

    name: ClassVar[str] = "snapkv"
    window: int = 32
    kernel: int = 5

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.window, int) or self.window <= 0:
            raise ValueError(f"window must be a positive int; got {self.window!r}")
        if self.window > self.budget:
            raise ValueError(f"window ({self.window}) must be <= budget ({self.budget})")
        if not isinstance(self.kernel, int) or self.kernel <= 0 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd int; got {self.kernel!r}")

    def scores(self, cache, probs, t_next, prefill):
        new = cache.pos >= t_next - probs.shape[3]  # the tokens of this call
        if prefill:
            obs = _group_mean(probs[:, :, :, -self.window :])  # [B, W, S', H_kv]
            votes = jnp.sum(obs, axis=1)
            r = self.kernel // 2
            padded = jnp.pad(votes, [(0, 0), (r, r), (0, 0)])
            pooled = (
                jax.lax.reduce_window(
                    padded, 0.0, jax.lax.add, (1, self.kernel, 1), (1, 1, 1), "VALID"
                )
                / self.kernel
            )
            stat = jnp.where(new, pooled, cache.stat)
            s = jnp.where(cache.pos >= t_next - self.window, _BIG + cache.pos, stat)
        else:  # decoded tokens rank above prompt keys, newest first
            stat = jnp.where(new, _BIG + cache.pos.astype(jnp.float32), cache.stat)
            s = stat
        return s, stat


@dataclasses.dataclass(frozen=True)
class TOVA(EvictionPolicy):
    """The newest query's attention averaged over every head of the layer."""

    name: ClassVar[str] = "tova"

    def scores(self, cache, probs, t_next, prefill):
        last = jnp.mean(probs[:, :, :, -1], axis=(1, 2))  # [B, S']
        s = jnp.broadcast_to(last[:, :, None], cache.pos.shape)
        return s, cache.stat


# name -> policy class (a frozen dataclass whose fields are the policy's options)
EVICTION_POLICIES: Registry[type[EvictionPolicy]] = Registry("eviction policy")
for _policy in (RetentionEviction, GlobalRetentionEviction, StreamingLLM, H2O, SnapKV, TOVA):
    EVICTION_POLICIES.register(_policy.name, _policy)
EVICTION_POLICIES.seal()


def make_policy(name: str, **options) -> EvictionPolicy:
    """Builds eviction policy ``name`` (one of :data:`EVICTION_POLICIES`) with its options;
    ``ValueError`` for an unknown name or option (closest one suggested) or a mistyped value."""
    return build_options(EVICTION_POLICIES.get(name), options, where=name)
