"""Tests for memarch.kernels.flash_attention (decay_attention impl="pallas").

Every check compares the Pallas kernel with ``impl="naive"`` (the materialised ``T × T`` form,
itself checked against an explicit loop in tests/ops/test_decay_attention.py) on the output and
the gradients of every input (q, k, v, log_fgate, key_slope) through ``Σ o ⊙ dO``, with
memarch.testing.assert_close: relative RMS ≤ 1e-4 in float32, ≤ 1e-2 in bfloat16 (the bf16
kernel against the float32 naive op on the same bf16-rounded inputs). Cases cover no bias,
ALiBi, FoX, TRIM-KV and both, causal / sliding window / packed segments, grouped-query heads,
T not a multiple of the block, two block sizes, weak and strong gates, both kernel layouts
("grid" for TPU, "loop" for GPU), and one TPU-simulating run (NaN-poisoned uninitialised
memory) of the forward and both backward kernels. ``interpret=None``: on CPU the kernels are
interpreted, on a GPU/TPU the same tests run compiled.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memarch.kernels import _platform, compile_target
from memarch.kernels.flash_attention import flash_attention
from memarch.ops import decay_attention
from memarch.testing import assert_close, rel_rms

F32_TOL, BF16_TOL = 1e-4, 1e-2


def make(seed, *, b=2, t=37, h=2, hkv=1, d=16, bias="both", strength=1.0, packed=False):
    """Inputs for one case: q, k, v, log_fgate, key_slope, segment_ids, dO (float32).

    ``bias``: "none"; "alibi" (constant per-head slope −m_h); "fox" (per-query-head forget
    gate); "trimkv" (per-KV-head slope log β); "both" (fox + trimkv). ``strength`` scales the
    log gates (1e-4 weak: almost no forgetting; 20 strong: a few tokens of memory).
    """
    rng = np.random.default_rng(seed)
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    q, do = f32(rng.standard_normal((b, t, h, d))), f32(rng.standard_normal((b, t, h, d)))
    k, v = f32(rng.standard_normal((b, t, hkv, d))), f32(rng.standard_normal((b, t, hkv, d)))
    logsig = lambda shape: -np.logaddexp(0.0, -rng.standard_normal(shape) - 1.0)
    f = a = None
    if bias in ("fox", "both"):
        f = f32(strength * logsig((b, t, h)))
    if bias in ("trimkv", "both"):
        a = f32(strength * logsig((b, t, hkv)))
    if bias == "alibi":
        a = f32(np.broadcast_to(-(2.0 ** -np.arange(1, h + 1)), (b, t, h)))
    seg = None
    if packed:
        cut = (t // 3, t // 3 + 5)
        seg = jnp.asarray(np.searchsorted(cut, np.arange(t), side="right")[None].repeat(b, 0))
    return q, k, v, f, a, seg, do


@functools.partial(jax.jit, static_argnames=("impl", "window", "block"))
def fwd_bwd(q, k, v, f, a, seg, do, *, impl, window, block):
    """(o, dq, dk, dv, d log_fgate, d key_slope) of ``Σ o ⊙ dO`` through decay_attention."""

    def loss(q, k, v, f, a):
        o = decay_attention(
            q, k, v, f, a, window=window, segment_ids=seg, impl=impl, block_size=block
        )
        return jnp.sum(o.astype(jnp.float32) * do), o

    grads, o = jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)(q, k, v, f, a)
    return (o, *grads)


NAMES = ("o", "dq", "dk", "dv", "dlog_fgate", "dkey_slope")


def check_against_naive(inputs, *, window, block_size, tol=F32_TOL, up=None):
    """Runs the Pallas op and the naive op (on ``up(inputs)`` if given) and compares."""
    q, k, v, f, a, seg, do = inputs
    got = fwd_bwd(q, k, v, f, a, seg, do, impl="pallas", window=window, block=block_size)
    if up is not None:
        q, k, v = up(q), up(k), up(v)
    ref = fwd_bwd(q, k, v, f, a, seg, do, impl="naive", window=window, block=block_size)
    for name, x, r in zip(NAMES, got, ref, strict=True):
        if r is None:
            assert x is None, name
            continue
        assert_close(name, jnp.asarray(x, jnp.float32), r, tol)
    return got


@pytest.mark.parametrize(
    "t,block,bias,window,strength,packed",
    [
        (1, 16, "both", None, 1.0, False),
        (37, 16, "none", None, 1.0, False),
        (37, 32, "alibi", None, 1.0, False),
        (37, 16, "fox", 5, 1.0, True),
        (100, 32, "trimkv", None, 1.0, False),
        (100, 32, "both", 20, 1e-4, True),
        (100, 16, "both", None, 20.0, False),
    ],
)
def test_pallas_matches_naive_with_grads(t, block, bias, window, strength, packed):
    b = 2 if t < 100 else 1  # keep the interpreted grid at a few dozen steps per kernel
    inputs = make(t, b=b, t=t, bias=bias, strength=strength, packed=packed)
    check_against_naive(inputs, window=window, block_size=block)


def _kernel_fwd_bwd(inputs, *, window, variant, interpret, block_q, block_k):
    q, k, v, f, a, seg, do = inputs
    h = q.shape[2]
    a = jnp.broadcast_to(jnp.repeat(a, h // a.shape[2], axis=2), q.shape[:3])

    def loss(q, k, v, f, a):
        o = flash_attention(
            q,
            k,
            v,
            jnp.cumsum(f, axis=1),
            a,
            seg,
            scale=q.shape[-1] ** -0.5,
            window=window,
            block_q=block_q,
            block_k=block_k,
            interpret=interpret,
            variant=variant,
        )
        return jnp.sum(o * do), o

    grads, o = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))(q, k, v, f, a)
    ref_grads, ref = jax.jit(
        jax.grad(
            lambda q, k, v, f, a: (lambda o: (jnp.sum(o * do), o))(
                decay_attention(q, k, v, f, a, window=window, segment_ids=seg, impl="naive")
            ),
            argnums=(0, 1, 2, 3, 4),
            has_aux=True,
        )
    )(q, k, v, f, a)
    errs = {}
    for name, x, r in zip(NAMES, (o, *grads), (ref, *ref_grads), strict=True):
        assert_close(name, x, r, F32_TOL)
        errs[name] = rel_rms(x, r)
    return errs  # relative RMS error of o and of every gradient vs the naive op


@pytest.mark.parametrize("variant", ["grid", "loop"])
def test_both_layouts_with_unequal_blocks(variant):
    """The TPU ("grid") and GPU ("loop") layouts, block_q ≠ block_k, GQA with 2 query heads
    per KV head, packed segments and a window. On a GPU the grid layout (sequential grid
    steps) runs interpreted; everything else runs on the default backend."""
    interpret = True if (variant == "grid" and _platform.backend() == "gpu") else None
    inputs = make(11, b=1, t=70, h=4, hkv=2, packed=True)
    errs = _kernel_fwd_bwd(
        inputs, window=23, variant=variant, interpret=interpret, block_q=32, block_k=16
    )
    assert set(errs) == set(NAMES) and max(errs.values()) <= F32_TOL, errs


def test_tpu_interpret_mode_nan_poisoned():
    """Forward, dq and dk/dv kernels under the TPU-simulating interpreter: uninitialised
    memory is NaN and out-of-bounds reads raise, so an unwritten block or a missing scratch
    initialisation fails."""
    inputs = make(12, b=1, t=37, h=2, hkv=1, d=8, packed=True)
    errs = _kernel_fwd_bwd(
        inputs, window=9, variant="grid", interpret="tpu", block_q=16, block_k=16
    )
    assert set(errs) == set(NAMES) and max(errs.values()) <= F32_TOL, errs


def test_bfloat16_close_to_float32_naive():
    q, k, v, f, a, seg, do = make(13, t=45, bias="both")
    bf = lambda x: x.astype(jnp.bfloat16)
    got = check_against_naive(
        (bf(q), bf(k), bf(v), f, a, seg, do),
        window=None,
        block_size=16,
        tol=BF16_TOL,
        up=lambda x: x.astype(jnp.float32),
    )
    assert got[0].dtype == jnp.bfloat16 and got[1].dtype == jnp.bfloat16


@pytest.mark.parametrize("variant", ["grid", "loop"])
def test_skips_blocks_outside_causal_and_window_range(variant):
    """Key blocks a query block cannot see are never read: NaN values there (in the future
    of every query of a block, or older than its whole window) leave those queries finite
    and equal to the naive op on clean inputs."""
    if variant == "grid" and _platform.backend() == "gpu":
        pytest.skip("the grid layout is not compiled for GPU (sequential grid steps)")
    q, k, v, f, a, _, _ = make(14, b=1, t=64, h=1, hkv=1, d=8)
    scale = 8**-0.5
    lam = jnp.cumsum(f, axis=1)
    run = functools.partial(flash_attention, scale=scale, block_q=16, block_k=16, variant=variant)
    nan = jnp.nan
    # Future: keys 48..63 poisoned; queries 0..47 never load key block 3.
    o = run(q, k, v.at[:, 48:].set(nan), lam, a)
    ref = decay_attention(q, k, v, f, a, impl="naive")
    assert_close("causal skip", o[:, :48], ref[:, :48], F32_TOL)
    # Window 8: queries 32..63 start at key ≥ 25, so key block 0 is never loaded for them.
    o = run(q, k.at[:, :16].set(nan), v.at[:, :16].set(nan), lam, a, window=8)
    ref = decay_attention(q, k, v, f, a, window=8, impl="naive")
    assert_close("window skip", o[:, 32:], ref[:, 32:], F32_TOL)


def test_op_dispatch():
    """impl="pallas" lowers to pallas_call; impl="auto" does so exactly on GPU/TPU."""
    q, k, v, f, a, _, _ = make(15, b=1, t=8, d=8)

    def has_pallas(impl):
        jaxpr = jax.make_jaxpr(lambda *x: decay_attention(*x, impl=impl))(q, k, v, f, a)
        return "pallas_call" in str(jaxpr)

    assert has_pallas("pallas")
    assert has_pallas("auto") == (_platform.backend() in ("gpu", "tpu"))
    assert not has_pallas("chunk")


def test_rejects_bad_input():
    q, k, v, f, a, _, _ = make(16, b=1, t=8, h=2, hkv=1, d=8)
    a_h = jnp.repeat(a, 2, axis=2)
    kw = {"scale": 1.0}
    with pytest.raises(ValueError, match=r"k, v must have shapes"):
        flash_attention(q, k[:, :5], v, **kw)
    with pytest.raises(ValueError, match=r"lam must have shape \(1, 8, 2\)"):
        flash_attention(q, k, v, f[..., :1], **kw)
    with pytest.raises(ValueError, match="q, k, v must share one float dtype"):
        flash_attention(q, k.astype(jnp.bfloat16), v, **kw)
    with pytest.raises(ValueError, match="lam must be floating point"):
        flash_attention(q, k, v, jnp.zeros((1, 8, 2), jnp.int32), **kw)
    with pytest.raises(ValueError, match=r"slope must have shape"):
        flash_attention(q, k, v, None, a, **kw)  # per-KV-head slope: the op broadcasts it
    with pytest.raises(ValueError, match="segment_ids must have shape"):
        flash_attention(q, k, v, segment_ids=jnp.zeros((1, 4), jnp.int32), **kw)
    with pytest.raises(ValueError, match="block_k must be a positive int"):
        flash_attention(q, k, v, block_k=0, **kw)
    with pytest.raises(ValueError, match="window must be a positive int"):
        flash_attention(q, k, v, a_h, window=-1, **kw)
    with pytest.raises(ValueError, match="variant must be one of"):
        flash_attention(q, k, v, variant="tiled", **kw)
    with pytest.raises(ValueError, match="interpret must be one of"):
        flash_attention(q, k, v, interpret="gpu", **kw)
    with compile_target("gpu"), pytest.raises(ValueError, match='variant="grid" needs sequen'):
        flash_attention(q, k, v, variant="grid", interpret=False, **kw)
    with pytest.raises(ValueError, match="impl must be one of"):
        decay_attention(q, k, v, impl="flash")
