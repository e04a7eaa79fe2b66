"""Tests for memarch.kvcache.losses: retention mass vs a loop, capacity loss (zero below the
budget, gradient vs finite differences), distillation loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memarch.kvcache.losses import capacity_loss, distillation_loss, retention_mass
from memarch.testing import assert_close


def loop_mass(log_beta, seg):
    a = np.asarray(log_beta, np.float64)
    b, t, h = a.shape
    out = np.zeros_like(a)
    for bi in range(b):
        for ti in range(t):
            for i in range(ti + 1):
                if seg[bi, i] == seg[bi, ti]:
                    out[bi, ti] += np.exp((ti - i) * a[bi, i])
    return out


def loop_capacity(log_beta, budget, seg):
    s = loop_mass(log_beta, seg)
    b, t, _ = s.shape
    pos = np.zeros((b, t))
    for bi in range(b):
        for ti in range(1, t):
            pos[bi, ti] = 0 if seg[bi, ti] != seg[bi, ti - 1] else pos[bi, ti - 1] + 1
    return np.mean(np.maximum(s - budget, 0) / (pos + 1)[..., None])


def gates(seed, shape=(2, 21, 3), scale=1.0):
    u = np.random.default_rng(seed).standard_normal(shape) * scale + 2.0
    return jnp.asarray(-np.logaddexp(0, -u), jnp.float32)


@pytest.mark.parametrize("block,packed", [(4, False), (8, True), (64, True)])
def test_retention_mass_matches_loop(block, packed):
    a = gates(0)
    seg = np.zeros((2, 21), np.int32)
    if packed:
        seg[:, 9:] = 1
        seg[1, 15:] = 4
    got = retention_mass(a, jnp.asarray(seg) if packed else None, block_size=block)
    assert_close("S_t", got, loop_mass(a, seg), 1e-5)
    assert_close(
        "L_cap",
        capacity_loss(a, 3.0, jnp.asarray(seg), block_size=block),
        loop_capacity(a, 3.0, seg),
        1e-5,
    )


def test_capacity_loss_zero_when_mass_within_budget():
    # β ≡ 1: S_t = t + 1 ≤ T, so M = T gives zero loss and M = T − 1 does not
    a = jnp.zeros((1, 10, 2))
    assert float(capacity_loss(a, 10.0)) == 0.0
    assert float(capacity_loss(a, 9.0)) > 0.0
    # β = 0.5: S_t < 1/(1 − β) = 2 for every t
    assert float(capacity_loss(jnp.full((2, 30, 2), np.log(0.5)), 2.0)) == 0.0
    g = jax.grad(lambda x: capacity_loss(x, 2.0))(jnp.full((2, 30, 2), np.log(0.5)))
    assert float(jnp.max(jnp.abs(g))) == 0.0


def test_capacity_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        a = jnp.asarray(np.asarray(gates(1, (1, 12, 2), 2.0)), jnp.float64)
        seg = jnp.asarray([[0] * 5 + [1] * 7], jnp.int32)
        f = jax.jit(lambda x: capacity_loss(x, 2.5, seg, block_size=4))
        g = np.asarray(jax.grad(f)(a))
        assert np.abs(g).max() > 0
        eps = 1e-6
        fd = np.zeros_like(g)
        for idx in np.ndindex(*a.shape):
            e = np.zeros(a.shape)
            e[idx] = eps
            fd[idx] = (float(f(a + e)) - float(f(a - e))) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)


def test_capacity_rejects_bad_input():
    with pytest.raises(ValueError, match="budget must be > 0"):
        capacity_loss(jnp.zeros((1, 4, 1)), 0.0)
    with pytest.raises(ValueError, match=r"log_beta must have shape \[B, T, H\]"):
        capacity_loss(jnp.zeros((4, 1)), 1.0)


def test_distillation_loss():
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.standard_normal((2, 5, 7)), jnp.float32)
    t = jnp.asarray(rng.standard_normal((2, 5, 7)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 7, (2, 5)))
    mask = jnp.asarray(rng.uniform(size=(2, 5)) < 0.7).at[0, 0].set(True)
    loss, parts = distillation_loss(s, t, y, mask, kl_weight=0.5, ntp_weight=2.0)
    log_softmax = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))
    lq, lp = log_softmax(np.asarray(s, np.float64)), log_softmax(np.asarray(t, np.float64))
    m = np.asarray(mask)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)[m].mean()
    ntp = -np.take_along_axis(lq, np.asarray(y)[..., None], -1)[..., 0][m].mean()
    np.testing.assert_allclose([float(parts["kl"]), float(parts["ntp"])], [kl, ntp], rtol=1e-5)
    np.testing.assert_allclose(float(loss), 0.5 * kl + 2.0 * ntp, rtol=1e-5)
    # KL vanishes at the teacher, and no gradient reaches the teacher
    assert abs(float(distillation_loss(t, t, y)[1]["kl"])) < 1e-6
    gt = jax.grad(lambda tt: distillation_loss(s, tt, y)[0])(t)
    assert float(jnp.max(jnp.abs(gt))) == 0.0
