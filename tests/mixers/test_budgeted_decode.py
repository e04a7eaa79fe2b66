"""Budgeted decoding of the decay-attention mixers (fox, trimkv) under every eviction policy:
each decode step equals attention recomputed over the kept keys (plus the new token), with the
same bias; StreamingLLM keeps exactly its sinks and window; a budget ≥ context evicts nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch import mixers
from memarch.kvcache import (
    H2O,
    TOVA,
    GlobalRetentionEviction,
    RetentionEviction,
    SnapKV,
    StreamingLLM,
    keep_global,
)
from memarch.mixers import conformance
from memarch.testing import assert_close

D, H, HKV = 32, 4, 2
MIXER_OPTS = {
    "trimkv": {"gate_bias": 1.0, "gate_hidden": 16, "num_kv_heads": HKV},
    "fox": {"num_kv_heads": HKV, "rope": True, "forget_bias": 3.0},
}


def build(name, **extra):
    opts = dict(MIXER_OPTS[name], **extra)
    return mixers.build(name, d_model=D, num_heads=H, rngs=nnx.Rngs(0), **opts)


def inputs(b, t, seed=1):
    return jax.random.normal(jax.random.key(seed), (b, t, D), jnp.float32)


def reference_step(m, x, t, kept_pos):
    """Output at position t recomputed in float64 over keys ``kept_pos [B, S, H_kv]`` ∪ {t}."""
    b, n, _ = x.shape
    q, k, v, _ = m._project(x, jnp.broadcast_to(jnp.arange(n), (b, n)))
    log_f, log_beta = m._gates(x)
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    g, d = H // HKV, q.shape[-1]
    o = np.zeros((b, H, d))
    for bi in range(b):
        for h in range(H):
            kh = h // g
            kp = kept_pos[bi, :, kh]
            idx = np.array(sorted(set(kp[kp >= 0].tolist()) | {t}))
            if m.window is not None:
                idx = idx[idx > t - m.window]
            logit = k[bi, idx, kh] @ q[bi, t, h] / np.sqrt(d)
            if log_f is not None:
                lam = np.cumsum(np.asarray(log_f, np.float64)[bi, :, h])
                logit += lam[t] - lam[idx]
            if log_beta is not None and m._decode_bias_slope(log_beta) is not None:
                logit += (t - idx) * np.asarray(log_beta, np.float64)[bi, idx, kh]
            w = np.exp(logit - logit.max())
            o[bi, h] = (w / w.sum()) @ v[bi, idx, kh]
    return m.o_proj(jnp.asarray(o.reshape(b, 1, H * d), jnp.float32))


@pytest.mark.parametrize(
    "name,policy,extra",
    [
        ("trimkv", RetentionEviction(budget=6), {}),
        ("trimkv", RetentionEviction(budget=6, recent=2), {"decode_bias": False}),
        ("trimkv", H2O(budget=6, recent=2), {}),
        ("fox", StreamingLLM(budget=6, sinks=2), {}),
        ("fox", SnapKV(budget=6, window=3, kernel=3), {"window": 8}),
        ("trimkv", TOVA(budget=6), {}),
    ],
)
def test_decode_under_budget_equals_attention_over_kept_set(name, policy, extra):
    m = build(name, eviction=policy, **extra)
    b, t, prefix = 2, 15, 9
    x = inputs(b, t)
    f = conformance.compiled(m)
    cache = m.init_cache(b, t, jnp.float32)
    assert cache.slots == policy.budget
    _, cache = f(x[:, :prefix], cache=cache)
    for step in range(prefix, t):
        kept = np.asarray(cache.pos)
        assert (kept >= 0).sum(1).min() == policy.budget  # the budget is full, never exceeded
        if isinstance(policy, StreamingLLM):
            recent = policy.budget - policy.sinks
            want = set(range(policy.sinks)) | set(range(step - recent, step))
            assert all(
                set(kept[bi, :, kh].tolist()) == want for bi in range(b) for kh in range(HKV)
            )
        y, cache = f(x[:, step : step + 1], cache=cache)
        assert_close(f"step {step}", y, reference_step(m, x, step, kept), 1e-5)
    assert int(cache.length) == t


def test_decode_under_global_budget_equals_attention_over_globally_kept_set():
    """Two TRIM-KV layers under one budget ("Make Each Token Count"): after every call the
    caches hold exactly ``total`` keys over all (layer, KV head) — unevenly — and each decode
    step equals attention recomputed over that layer's globally kept keys plus the new token."""
    cap, total = 8, 10
    policy = GlobalRetentionEviction(budget=cap, total=total)
    opts = dict(MIXER_OPTS["trimkv"], eviction=policy)
    layers = [
        mixers.build("trimkv", d_model=D, num_heads=H, rngs=nnx.Rngs(seed), **opts)
        for seed in (0, 1)
    ]
    b, t, prefix = 2, 14, 9
    xs = [inputs(b, t, seed=1), inputs(b, t, seed=2)]
    fs = [conformance.compiled(m) for m in layers]
    caches = [
        f(x[:, :prefix], cache=m.init_cache(b, t, jnp.float32))[1]
        for m, f, x in zip(layers, fs, xs, strict=True)
    ]
    caches = keep_global(caches, total)
    uneven = False
    for step in range(prefix, t):
        kept = [np.asarray(c.pos) for c in caches]
        counts = np.stack([(k >= 0).sum(1) for k in kept], 1)  # [B, layers, H_kv]
        np.testing.assert_array_equal(counts.sum((1, 2)), total)
        assert counts.max() <= cap
        uneven |= len(np.unique(counts)) > 1
        new = []
        for li, (m, f, x, c, k) in enumerate(zip(layers, fs, xs, caches, kept, strict=True)):
            y, c = f(x[:, step : step + 1], cache=c)
            assert_close(f"layer {li} step {step}", y, reference_step(m, x, step, k), 1e-5)
            new.append(c)
        caches = keep_global(new, total)
    assert uneven  # heads and layers hold different numbers of keys


def test_global_policy_validates_total():
    with pytest.raises(ValueError, match="total must be a positive int"):
        GlobalRetentionEviction(budget=4)


@pytest.mark.parametrize("name", ["trimkv", "fox"])
def test_budget_at_least_context_evicts_nothing(name):
    m = build(name, eviction=RetentionEviction(budget=64))
    x = inputs(2, 20)
    conformance.check_decode_matches_full(m, x, 7, tol=1e-5)
    cache = m.init_cache(2, 20, jnp.float32)
    _, cache = m(x, cache=cache)
    np.testing.assert_array_equal(np.asarray(cache.num_kept()), 20)
    assert sorted(np.asarray(cache.pos)[0, :, 0].tolist()) == list(range(20))


def test_trimkv_prefill_keeps_top_m_by_retention_score():
    m = build("trimkv", eviction=RetentionEviction(budget=5))
    x = inputs(2, 12)
    _, cache = m(x, cache=m.init_cache(2, 12, jnp.float32))
    log_beta = np.asarray(m._gates(x)[1])  # [B, T, H_kv]
    score = (12 - np.arange(12))[None, :, None] * log_beta
    for bi in range(2):
        for kh in range(HKV):
            want = set(np.argsort(-score[bi, :, kh])[:5].tolist())
            assert set(np.asarray(cache.pos)[bi, :, kh].tolist()) == want
    assert len({tuple(sorted(np.asarray(cache.pos)[0, :, kh])) for kh in range(HKV)}) == HKV


def test_rejects_a_non_policy_eviction():
    with pytest.raises(ValueError, match="eviction expects .*EvictionPolicy"):
        build("trimkv", eviction="h2o")
