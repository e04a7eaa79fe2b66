"""Tests for memarch.kvcache.policies: each scoring rule on hand-made inputs, validation."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from memarch.kvcache import cache as kvc
from memarch.kvcache.policies import (
    EVICTION_POLICIES,
    H2O,
    TOVA,
    EvictionPolicy,
    RetentionEviction,
    SnapKV,
    StreamingLLM,
    make_policy,
)


def cache_with(pos, slope=None, stat=None, h=1):
    """A cache over one batch row whose slots hold positions ``pos`` (all heads alike)."""
    pos = np.asarray(pos)
    s = len(pos)
    c = kvc.empty_cache(1, s, h, 2, group=1, forget_gate=False)
    tile = lambda x: jnp.asarray(np.repeat(np.asarray(x)[None, :, None], h, 2))
    return c.replace(
        pos=tile(pos).astype(jnp.int32),
        slope=tile(np.zeros(s) if slope is None else slope).astype(jnp.float32),
        stat=tile(np.zeros(s) if stat is None else stat).astype(jnp.float32),
    )


def kept(policy, c, probs, t_next, prefill):
    sc, stat = policy.scores(c, jnp.asarray(probs, jnp.float32), jnp.asarray(t_next), prefill)
    out = kvc.keep_top(c.replace(stat=stat), sc, policy.budget)
    p = np.asarray(out.pos)[0, :, 0]
    return sorted(p[p >= 0].tolist()), np.asarray(stat)[0, :, 0]


def test_retention_keeps_highest_future_retention():
    # score (t_next − pos)·log β: pos 0 with β≈1 outlives the newer but leaky pos 3
    c = cache_with([0, 1, 2, 3, 4], slope=[-1e-4, -0.5, -0.2, -2.0, -0.1])
    got, _ = kept(RetentionEviction(budget=3), c, np.zeros((1, 1, 1, 1, 5)), 5, False)
    t = 5 - np.arange(5)
    want = sorted(np.argsort(-(t * np.array([-1e-4, -0.5, -0.2, -2.0, -0.1])))[:3].tolist())
    assert got == want == [0, 2, 4]
    got, _ = kept(RetentionEviction(budget=3, recent=2), c, np.zeros((1, 1, 1, 1, 5)), 5, False)
    assert got == [0, 3, 4]


def test_streaming_llm_keeps_sinks_and_recent():
    c = cache_with(list(range(10)))
    got, _ = kept(StreamingLLM(budget=5, sinks=2), c, np.zeros((1, 1, 1, 1, 10)), 10, False)
    assert got == [0, 1, 7, 8, 9]


def test_h2o_accumulates_attention_and_keeps_recent():
    c = cache_with([0, 1, 2, 3, 4, 5], stat=[0.9, 0.1, 0.5, 0.0, 0.0, 0.0])
    probs = np.array([0.0, 0.05, 0.1, 0.8, 0.05, 0.0])[None, None, None, None]  # one query
    got, stat = kept(H2O(budget=4, recent=2), c, probs, 6, False)
    np.testing.assert_allclose(stat, [0.9, 0.15, 0.6, 0.8, 0.05, 0.0], rtol=1e-6)
    assert got == [0, 3, 4, 5]  # recent {4, 5} + heavy {0 (0.9), 3 (0.8)}


def test_snapkv_pools_the_observation_window():
    # prefill of 8 tokens; observation window = last 2 queries; kernel 3 average pooling
    c = cache_with(list(range(8)))
    probs = np.zeros((1, 1, 1, 8, 8))
    probs[0, 0, 0, 6, :3] = [0.3, 1.0, 0.05]
    probs[0, 0, 0, 7, 3:6] = [0.1, 0.5, 0.2]
    probs[0, 0, 0, 5, 3] = 5.0  # outside the observation window: ignored
    pol = SnapKV(budget=4, window=2, kernel=3)
    got, stat = kept(pol, c, probs, 8, True)
    votes = np.array([0.3, 1.0, 0.05, 0.1, 0.5, 0.2, 0, 0])
    pooled = np.convolve(votes, np.ones(3) / 3, mode="same")
    np.testing.assert_allclose(stat, pooled, rtol=1e-6)
    assert got == sorted([6, 7] + np.argsort(-pooled[:6])[:2].tolist()) == [0, 1, 6, 7]
    # after prefill, a decoded token ranks above every prompt key
    c2 = cache_with([0, 1, 6, 7, 8], stat=[*pooled[[0, 1, 6, 7]], 0.0])
    got2, _ = kept(pol, c2, np.zeros((1, 1, 1, 1, 5)), 9, False)
    assert 8 in got2 and len(got2) == 4


def test_tova_uses_the_last_query_averaged_over_heads():
    c = cache_with([0, 1, 2, 3], h=2)
    probs = np.zeros((1, 2, 1, 2, 4))
    probs[0, 0, 0, -1] = [0.1, 0.6, 0.2, 0.1]
    probs[0, 1, 0, -1] = [0.5, 0.0, 0.2, 0.3]
    probs[0, :, 0, 0] = [1.0, 0, 0, 0]  # an earlier query is ignored
    sc, _ = TOVA(budget=2).scores(c, jnp.asarray(probs), jnp.asarray(4), True)
    np.testing.assert_allclose(np.asarray(sc)[0, :, 0], [0.3, 0.3, 0.2, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(sc)[..., 0], np.asarray(sc)[..., 1])


@pytest.mark.parametrize(
    "name,options,match",
    [
        ("streaming_llm", {"budget": 3, "sinks": 4}, "at least the number of sink tokens"),
        ("streaming_llm", {"budget": 4, "sinks": 4}, "recent window"),
        ("h2o", {"budget": 8, "recent": 0}, "recent window must be > 0"),
        ("h2o", {"budget": 8, "recent": 8}, "must be < budget"),
        ("snapkv", {"budget": 8, "window": 0}, "window must be a positive int"),
        ("snapkv", {"budget": 8, "window": 9}, "must be <= budget"),
        ("snapkv", {"budget": 8, "window": 2, "kernel": 4}, "kernel must be a positive odd int"),
        ("tova", {"budget": 0}, "budget must be a positive int"),
        ("trimkv", {"budget": 4, "recent": 5}, "recent must be an int"),
        ("h20", {}, r"unknown eviction policy 'h20' \(did you mean 'h2o'\?\)"),
        ("tova", {"sinks": 2}, "unknown option 'sinks'"),
    ],
)
def test_rejects_bad_policies(name, options, match):
    with pytest.raises(ValueError, match=match):
        make_policy(name, **options)


# options that fit a budget of 4 (defaults otherwise; trimkv_global needs its shared total)
_REQUIRED = {"trimkv_global": {"total": 8}, "snapkv": {"window": 2}, "streaming_llm": {"sinks": 1}}


@pytest.fixture
def user_policy():
    """A user eviction policy (keep the oldest keys) registered for one test."""

    @EVICTION_POLICIES.register("t_oldest")
    @dataclasses.dataclass(frozen=True)
    class Oldest(EvictionPolicy):
        def scores(self, cache, probs, t_next, prefill):
            return -cache.pos.astype(jnp.float32), cache.stat

    yield "t_oldest"
    EVICTION_POLICIES.unregister("t_oldest")


def _policy_names():
    return [*EVICTION_POLICIES.available(), "t_oldest"]


@pytest.mark.parametrize("name", _policy_names())
def test_every_registered_policy_keeps_budget_slots(name, request):
    """Parametrised over the registry (plus a user entry): a new policy is tested alike."""
    if name == "t_oldest":
        request.getfixturevalue("user_policy")
    policy = make_policy(name, budget=4, **_REQUIRED.get(name, {}))
    c = cache_with(list(range(8)), slope=np.linspace(-1.0, -0.1, 8))
    probs = np.full((1, 1, 1, 8, 8), 1.0 / 8)
    sc, stat = policy.scores(c, jnp.asarray(probs, jnp.float32), jnp.asarray(8), True)
    assert sc.shape == stat.shape == c.pos.shape
    got, _ = kept(policy, c, probs, 8, True)
    assert len(got) == 4 and set(got) <= set(range(8))


def test_policy_options_are_type_checked():
    with pytest.raises(ValueError, match=r"h2o\.recent expects int \| None; got 'two'"):
        make_policy("h2o", budget=8, recent="two")
