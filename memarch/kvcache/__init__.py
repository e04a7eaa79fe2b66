"""KV caches under a memory budget, learned retention (TRIM-KV) losses and eviction policies.

- :mod:`memarch.kvcache.cache` — :class:`RetentionKVCache`, fixed-size per-(row, KV head)
  slots with validity by position, and top-M selection.
- :mod:`memarch.kvcache.policies` — :class:`EvictionPolicy` and the TRIM-KV, StreamingLLM,
  H2O, SnapKV and TOVA scoring rules (:func:`make_policy` by name).
- :mod:`memarch.kvcache.global_budget` — one budget across layers and KV heads.
- :mod:`memarch.kvcache.losses` — capacity loss, distillation loss, gate-only training.
"""

from memarch.kvcache.cache import RetentionKVCache, empty_cache, keep_top, top_slots
from memarch.kvcache.global_budget import global_keep, keep_global, total_kept
from memarch.kvcache.losses import (
    TRIMKV_GATE_PARAMS,
    capacity_loss,
    distillation_loss,
    retention_mass,
    trimkv_gates_enabled,
)
from memarch.kvcache.policies import (
    EVICTION_POLICIES,
    H2O,
    TOVA,
    EvictionPolicy,
    GlobalRetentionEviction,
    RetentionEviction,
    SnapKV,
    StreamingLLM,
    make_policy,
)

__all__ = [
    "TRIMKV_GATE_PARAMS",
    "H2O",
    "EVICTION_POLICIES",
    "TOVA",
    "EvictionPolicy",
    "GlobalRetentionEviction",
    "RetentionEviction",
    "RetentionKVCache",
    "SnapKV",
    "StreamingLLM",
    "capacity_loss",
    "distillation_loss",
    "empty_cache",
    "global_keep",
    "keep_global",
    "keep_top",
    "make_policy",
    "trimkv_gates_enabled",
    "retention_mass",
    "top_slots",
    "total_kept",
]
