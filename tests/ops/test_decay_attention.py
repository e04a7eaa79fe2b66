"""Tests for memarch.ops.decay_attention: naive vs an explicit NumPy loop, blockwise vs naive
(outputs and every gradient), the ALiBi / FoX / TRIM-KV special cases, packing, bad input."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memarch.mixers.attention import attend
from memarch.ops import decay_attention, decay_attention_cached
from memarch.testing import assert_close

TOL = 1e-5


def make(seed, b=2, t=23, h=4, hkv=2, d=8, *, gate_heads=None, slope_heads=None, strength=1.0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, t, h, d))
    k = rng.standard_normal((b, t, hkv, d))
    v = rng.standard_normal((b, t, hkv, d))
    f = None if gate_heads is None else -np.logaddexp(0, -rng.standard_normal((b, t, gate_heads)))
    a = None if slope_heads is None else -np.logaddexp(0, -rng.standard_normal((b, t, slope_heads)))
    to = lambda x, s=1.0: None if x is None else jnp.asarray(x * s, jnp.float32)
    return to(q), to(k), to(v), to(f, strength), to(a, strength)


def loop_reference(q, k, v, f, a, window=None):
    """Explicit O(T²) loop in float64: weight ∝ exp(q·k/√d + Σ_{i<l≤t} log f_l + (t−i) a_i)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, t, h, d = q.shape
    g = h // k.shape[2]
    out = np.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            kh = hi // g
            cols = [None if x is None else (hi if x.shape[2] == h else kh) for x in (f, a)]
            fh, ah = (
                None if x is None else np.asarray(x, np.float64)[bi, :, c]
                for x, c in zip((f, a), cols, strict=True)
            )
            for ti in range(t):
                lo = 0 if window is None else max(0, ti - window + 1)
                idx = np.arange(lo, ti + 1)
                logit = q[bi, ti, hi] @ k[bi, idx, kh].T / np.sqrt(d)
                if fh is not None:
                    logit = logit + np.array([fh[i + 1 : ti + 1].sum() for i in idx])
                if ah is not None:
                    logit = logit + (ti - idx) * ah[idx]
                w = np.exp(logit - logit.max())
                out[bi, ti, hi] = (w / w.sum()) @ v[bi, idx, kh]
    return out


@pytest.mark.parametrize(
    "gate_heads,slope_heads,window",
    [(None, None, None), (4, None, None), (None, 2, None), (2, 4, 5), (4, 2, 1)],
)
def test_naive_matches_loop(gate_heads, slope_heads, window):
    q, k, v, f, a = make(0, t=13, gate_heads=gate_heads, slope_heads=slope_heads)
    o = decay_attention(q, k, v, f, a, window=window, impl="naive")
    assert_close("naive vs loop", o, loop_reference(q, k, v, f, a, window), TOL)


@functools.partial(jax.jit, static_argnames=("impl", "window", "block_size"))
def fwd_bwd(q, k, v, f, a, do, seg, *, impl, window, block_size):
    def loss(q, k, v, f, a):
        o = decay_attention(
            q, k, v, f, a, window=window, segment_ids=seg, impl=impl, block_size=block_size
        )
        return jnp.sum(o * do), o

    grads, o = jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)(q, k, v, f, a)
    return (o, *grads)


@pytest.mark.parametrize(
    "t,block,window,packed,strength",
    [
        (23, 8, None, False, 1.0),
        (37, 16, 7, True, 1.0),
        (16, 16, None, True, 20.0),
        (20, 64, 3, False, 1e-4),
    ],
)
def test_blockwise_matches_naive_with_grads(t, block, window, packed, strength):
    q, k, v, f, a = make(1, t=t, gate_heads=4, slope_heads=2, strength=strength)
    do = jax.random.normal(jax.random.key(2), q.shape)
    seg = None
    if packed:
        cut = t // 3
        seg = jnp.asarray(np.r_[np.zeros(cut), np.ones(t - cut)][None].repeat(2, 0), jnp.int32)
    ref = fwd_bwd(q, k, v, f, a, do, seg, impl="naive", window=window, block_size=block)
    got = fwd_bwd(q, k, v, f, a, do, seg, impl="chunk", window=window, block_size=block)
    for name, x, r in zip(("o", "dq", "dk", "dv", "dlog_f", "da"), got, ref, strict=True):
        assert np.all(np.isfinite(np.asarray(x))), name
        assert_close(name, x, r, 1e-4)


@pytest.mark.parametrize("impl", ["naive", "chunk"])
def test_unit_gates_equal_plain_causal_attention(impl):
    """f ≡ 1 (log f = 0) and β ≡ 1 (log β = 0) give plain causal attention."""
    q, k, v, _, _ = make(3, t=19)
    zeros = jnp.zeros(q.shape[:3])
    plain = attend(q, k, v, jnp.tril(jnp.ones((19, 19), bool))[None].repeat(2, 0))
    assert_close("no bias", decay_attention(q, k, v, impl=impl, block_size=8), plain, TOL)
    got = decay_attention(q, k, v, zeros, zeros[..., :2], impl=impl, block_size=8)
    assert_close("unit gates", got, plain, TOL)


def test_alibi_as_constant_slope():
    q, k, v, _, _ = make(4, t=11, h=2, hkv=2)
    m = jnp.asarray([0.5, 0.125])
    slope = jnp.broadcast_to(-m, q.shape[:3])
    got = decay_attention(q, k, v, key_slope=slope, impl="chunk", block_size=4)
    qn, kn = np.asarray(q, np.float64), np.asarray(k, np.float64)
    logits = np.einsum("bthd,bshd->bhts", qn, kn) / np.sqrt(8)
    dist = np.arange(11)[:, None] - np.arange(11)[None]
    logits = logits - np.asarray(m)[None, :, None, None] * dist
    logits = np.where(dist >= 0, logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    ref = np.einsum("bhts,bshd->bthd", p / p.sum(-1, keepdims=True), np.asarray(v, np.float64))
    assert_close("alibi", got, ref, TOL)


def test_strong_forgetting_is_a_local_window():
    """f → 0 after every token: each query sees only itself, so o_t = v_t."""
    q, k, v, _, _ = make(5, t=9, h=2, hkv=2)
    f = jnp.full(q.shape[:3], -1e4)
    assert_close("o = v", decay_attention(q, k, v, f, impl="chunk", block_size=4), v, TOL)


def test_packed_equals_separate():
    q, k, v, f, a = make(6, b=1, t=20, gate_heads=4, slope_heads=2)
    seg = jnp.asarray([[0] * 7 + [5] * 13], jnp.int32)
    packed = decay_attention(q, k, v, f, a, segment_ids=seg, block_size=8)
    for lo, hi in ((0, 7), (7, 20)):
        alone = decay_attention(*(x[:, lo:hi] for x in (q, k, v, f, a)), block_size=8)
        assert_close(f"segment [{lo},{hi})", packed[:, lo:hi], alone, TOL)


def test_cached_matches_full_on_last_query():
    """decay_attention_cached over all keys reproduces the last rows of the full op."""
    q, k, v, f, a = make(7, t=15, gate_heads=4, slope_heads=2)
    b, t = q.shape[:2]
    lam = jnp.cumsum(f, axis=1).reshape(b, t, 2, 2)
    slope = jnp.broadcast_to(a[..., None], (b, t, 2, 2))
    pos = jnp.broadcast_to(jnp.arange(t)[None, :, None], (b, t, 2))
    o, probs = decay_attention_cached(
        q[:, -3:],
        k,
        v,
        jnp.broadcast_to(jnp.arange(t - 3, t), (b, 3)),
        pos,
        q_lam=lam[:, -3:],
        k_lam=lam,
        k_slope=slope,
    )
    full = decay_attention(q, k, v, f, a, impl="naive")
    assert_close("cached", o, full[:, -3:], TOL)
    assert probs.shape == (b, 2, 2, 3, t)
    np.testing.assert_allclose(np.asarray(probs.sum(-1)), 1.0, rtol=1e-5)


def test_rejects_bad_input():
    q, k, v, f, a = make(8, t=6, gate_heads=4, slope_heads=2)
    with pytest.raises(ValueError, match=r"k must have shape \[B, T, H_kv, D\]"):
        decay_attention(q, k[:, :5], v)
    with pytest.raises(ValueError, match="must divide"):
        decay_attention(q[:, :, :3], k, v)
    with pytest.raises(ValueError, match=r"log_fgate must have shape .*\[B, T, H\]"):
        decay_attention(q, k, v, f[..., :3])
    with pytest.raises(ValueError, match=r"key_slope must have shape"):
        decay_attention(q, k, v, None, a[:, :4])
    with pytest.raises(ValueError, match="window must be a positive int"):
        decay_attention(q, k, v, window=0)
    with pytest.raises(ValueError, match="impl must be one of"):
        decay_attention(q, k, v, impl="flash")
    with pytest.raises(ValueError, match="segment_ids must have shape"):
        decay_attention(q, k, v, segment_ids=jnp.zeros((2, 5), jnp.int32))


def _avals(jaxpr):
    """Every intermediate shape of a jaxpr, sub-jaxprs (scan bodies, custom_vjp) included."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield getattr(var.aval, "shape", ())
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


@pytest.mark.parametrize("impl,expect_txt", [("chunk", False), ("naive", True)])
def test_blockwise_never_materialises_t_by_t(impl, expect_txt):
    """fwd+bwd of the blockwise form holds no [.., T, .., T] array (the naive one does)."""
    q, k, v, f, a = make(9, b=1, t=96, h=2, hkv=1, d=4, gate_heads=2, slope_heads=1)

    def loss(q, k, v, f, a):
        return jnp.sum(decay_attention(q, k, v, f, a, impl=impl, block_size=16) ** 2)

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(q, k, v, f, a).jaxpr
    has_txt = any(sum(dim == 96 for dim in shape) >= 2 for shape in _avals(jaxpr))
    assert has_txt == expect_txt


def test_bfloat16_blockwise_close_to_float32_naive():
    q, k, v, f, a = make(10, t=21, gate_heads=4, slope_heads=2)
    q16, k16, v16 = (x.astype(jnp.bfloat16) for x in (q, k, v))
    do = jax.random.normal(jax.random.key(3), q.shape)
    got = fwd_bwd(q16, k16, v16, f, a, do, None, impl="chunk", window=None, block_size=8)
    up = lambda x: x.astype(jnp.float32)
    ref = fwd_bwd(
        up(q16), up(k16), up(v16), f, a, do, None, impl="naive", window=None, block_size=8
    )
    assert got[0].dtype == jnp.bfloat16 and got[1].dtype == jnp.bfloat16
    for name, x, r in zip(("o", "dq", "dk", "dv", "dlog_f", "da"), got, ref, strict=True):
        assert_close(name, x.astype(jnp.float32), r, 2e-2)
