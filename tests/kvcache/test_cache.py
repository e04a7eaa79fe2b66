"""Tests for memarch.kvcache.cache and global_budget: exact top-M selection, gather, global."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from memarch.kvcache import cache as kvc
from memarch.kvcache.global_budget import global_keep, retention_scores, total_kept


def random_cache(seed, b=2, s=12, h=3, empty=3, length=40):
    rng = np.random.default_rng(seed)
    c = kvc.empty_cache(b, s, h, 4, group=2, forget_gate=True)
    # distinct positions within each (row, head)
    pos = np.stack([rng.permutation(length)[:s] for _ in range(b * h)])
    pos = pos.reshape(b, h, s).transpose(0, 2, 1)
    pos[:, :empty] = -1  # the first `empty` slots of each head are free
    return c.replace(
        k=jnp.asarray(rng.standard_normal(c.k.shape), jnp.float32),
        pos=jnp.asarray(pos, jnp.int32),
        slope=jnp.asarray(-rng.uniform(0, 1, c.slope.shape), jnp.float32),
        lam=jnp.asarray(rng.standard_normal(c.lam.shape), jnp.float32),
        length=jnp.asarray(length, jnp.int32),
    )


@pytest.mark.parametrize("budget", [1, 5, 9, 12])
def test_keep_top_keeps_exactly_the_top_m(budget):
    c = random_cache(0)
    scores = jnp.asarray(np.random.default_rng(1).standard_normal(c.pos.shape), jnp.float32)
    kept = kvc.keep_top(c, scores, budget)
    pos, sc, kp = np.asarray(c.pos), np.asarray(scores), np.asarray(kept.pos)
    for bi in range(pos.shape[0]):
        for hi in range(pos.shape[2]):
            valid = pos[:, :, hi][bi] >= 0
            order = np.argsort(-np.where(valid, sc[bi, :, hi], -np.inf))[:budget]
            want = set(pos[bi, order, hi][valid[order]].tolist())
            got = set(kp[bi, :, hi][kp[bi, :, hi] >= 0].tolist())
            assert got == want, (bi, hi)
    # every per-slot field moves with its key
    i = kvc.top_slots(scores, c.pos, budget)
    np.testing.assert_array_equal(
        np.asarray(kept.k), np.take_along_axis(np.asarray(c.k), np.asarray(i)[..., None], 1)
    )
    np.testing.assert_array_equal(
        np.asarray(kept.lam), np.take_along_axis(np.asarray(c.lam), np.asarray(i)[..., None], 1)
    )


def test_keep_top_rejects_budget_over_slots():
    with pytest.raises(ValueError, match="exceeds"):
        kvc.keep_top(random_cache(0), jnp.zeros((2, 12, 3)), 13)


def test_global_keep_is_the_global_top_m():
    caches = [random_cache(2, s=6, h=2), random_cache(3, s=4, h=1), random_cache(4, s=5, h=3)]
    budget = 11
    kept = global_keep(caches, budget)
    for bi in range(2):
        entries = []
        for li, c in enumerate(caches):
            sc, pos = np.asarray(retention_scores(c))[bi], np.asarray(c.pos)[bi]
            entries += [
                (sc[s, h], li, h, pos[s, h])
                for s in range(c.slots)
                for h in range(pos.shape[1])
                if pos[s, h] >= 0
            ]
        entries.sort(key=lambda e: -e[0])
        want = {(li, h, p) for _, li, h, p in entries[:budget]}
        got = set()
        for li, c in enumerate(kept):
            pos = np.asarray(c.pos)[bi]
            got |= {
                (li, h, pos[s, h])
                for s in range(c.slots)
                for h in range(pos.shape[1])
                if pos[s, h] >= 0
            }
        assert got == want
    np.testing.assert_array_equal(np.asarray(total_kept(kept)), [budget, budget])


def test_global_keep_rejects_bad_budget():
    with pytest.raises(ValueError, match="budget must be an int"):
        global_keep([random_cache(0)], 0)
