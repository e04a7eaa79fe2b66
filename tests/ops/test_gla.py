"""Tests for memarch.ops.gla: chunk vs naive, packing, decode step, reductions, stability.

Criterion (docs/linear_attention.md §Test criterion): rel-RMS via memarch.testing.assert_close on
o, S_T and the gradients of q, k, v, g, S_0 through the loss Σ(o⊙dO) + Σ(S_T⊙dS_T).
fp32: 1e-4. bf16: the bf16 chunk form is compared with the fp32 naive form on the same
bf16-rounded inputs (both see identical inputs, so the error measured is the chunk form's own
error plus bf16 output/gradient rounding), tolerance 1e-2.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_harness import make_gla_inputs as make_inputs

from memarch.ops import gla, gla_step
from memarch.testing import assert_close

F32_TOL, BF16_TOL = 1e-4, 1e-2
NAMES = ("o", "S_T", "dq", "dk", "dv", "dg", "dS0")


@functools.partial(jax.jit, static_argnames=("impl", "chunk_size"))
def fwd_bwd(q, k, v, g, s0, do, ds, seg=None, *, impl, chunk_size=64):
    """(o, S_T, grads of (q, k, v, g, S_0)) for the loss Σ(o⊙dO) + Σ(S_T⊙dS_T)."""

    kw = dict(output_final_state=True, segment_ids=seg, impl=impl, chunk_size=chunk_size)

    def loss(q, k, v, g, s0):
        o, s = gla(q, k, v, g, initial_state=s0, **kw)
        return jnp.sum(o.astype(jnp.float32) * do) + jnp.sum(s * ds), (o, s)

    grads, (o, s) = jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)(q, k, v, g, s0)
    return (o, s, *grads)


def assert_all_close(actual, ref, tol, label=""):
    for name, a, r in zip(NAMES, actual, ref, strict=True):
        if r is not None:
            assert_close(f"{label}{name}", a, r, tol)


def as_f32(x):
    return None if x is None else x.astype(jnp.float32)


# A covering subset of T × chunk × head dims × gate form × gate strength × initial state.
@pytest.mark.parametrize(
    "t, chunk, dk, dv, per_channel, mode, init",
    [
        (1, 64, 24, 40, True, "tau1", True),
        (63, 16, 24, 40, True, "strong", False),
        (63, 64, 16, 16, False, "tau0.1", True),
        (75, 32, 32, 24, False, "weak", True),
        (75, 16, 24, 40, False, "strong", True),
        (300, 64, 24, 40, True, "tau10", True),
        (300, 32, 16, 48, True, "weak", False),
        (300, 16, 24, 40, False, "tau1", False),
    ],
)
def test_chunk_matches_naive(t, chunk, dk, dv, per_channel, mode, init):
    x = make_inputs(t, 2, t, 2, dk, dv, per_channel=per_channel, mode=mode, init=init)
    args = (x["q"], x["k"], x["v"], x["g"], x["s0"], x["do"], x["ds"])
    ref = fwd_bwd(*args, impl="naive")
    out = fwd_bwd(*args, impl="chunk", chunk_size=chunk)
    assert_all_close(out, ref, F32_TOL)


@pytest.mark.parametrize("per_channel, mode", [(True, "tau1"), (False, "strong")])
def test_bf16_chunk_matches_fp32_naive(per_channel, mode):
    x = make_inputs(7, 2, 75, 2, 24, 40, per_channel=per_channel, mode=mode, dtype=jnp.bfloat16)
    rest = (x["g"], x["s0"], x["do"], x["ds"])
    out = fwd_bwd(x["q"], x["k"], x["v"], *rest, impl="chunk", chunk_size=32)
    assert out[0].dtype == jnp.bfloat16 and out[1].dtype == jnp.float32
    ref = fwd_bwd(as_f32(x["q"]), as_f32(x["k"]), as_f32(x["v"]), *rest, impl="naive")
    assert_all_close(out, ref, BF16_TOL)


def reference_recurrence(q, k, v, g, s0, segment_ids, scale):
    """float64 numpy recurrence, run separately on each packed segment of each row."""
    q, k, v, g = (np.asarray(x, np.float64) for x in (q, k, v, g))
    b, t, h, dk = q.shape
    if g.ndim == 3:
        g = np.broadcast_to(g[..., None], q.shape)
    o = np.zeros(v.shape)
    s_final = np.zeros((b, h, dk, v.shape[-1]))
    for row in range(b):
        ids = np.asarray(segment_ids[row])
        starts = [0, *np.flatnonzero(ids[1:] != ids[:-1]) + 1, t]
        for lo, hi in zip(starts[:-1], starts[1:], strict=True):
            s = np.array(s0[row], np.float64) if lo == 0 else np.zeros_like(s_final[row])
            for i in range(lo, hi):
                s = np.exp(g[row, i])[..., None] * s + k[row, i][..., None] * v[row, i][:, None]
                o[row, i] = scale * np.einsum("hkv,hk->hv", s, q[row, i])
        s_final[row] = s
    return o, s_final


PACKED = np.array(
    [
        # [0..15 | 16] (a length-1 segment at a chunk start) | changes at 32 and 48 (chunk
        # boundaries for chunk 16) | one inside a chunk at 57.
        [0] * 16 + [1] + [2] * 15 + [3] * 16 + [4] * 9 + [5] * 18,
        # a length-1 first segment, then non-monotone ids: a new segment is where the id changes.
        [7] + [3] * 30 + [7] * 33 + [3] * 11,
    ]
)


@pytest.mark.parametrize("per_channel, mode, chunk", [(True, "tau1", 16), (False, "tau0.1", 32)])
def test_packed_segments_equal_separate_runs(per_channel, mode, chunk):
    x = make_inputs(3, 2, 75, 2, 24, 40, per_channel=per_channel, mode=mode)
    seg = jnp.asarray(PACKED, jnp.int32)
    ref_o, ref_s = reference_recurrence(x["q"], x["k"], x["v"], x["g"], x["s0"], PACKED, 24**-0.5)
    args = (x["q"], x["k"], x["v"], x["g"], x["s0"], x["do"], x["ds"], seg)
    naive = fwd_bwd(*args, impl="naive")
    chunked = fwd_bwd(*args, impl="chunk", chunk_size=chunk)
    for label, out in (("naive ", naive), ("chunk ", chunked)):
        assert_close(label + "o", out[0], ref_o, F32_TOL)
        assert_close(label + "S_T", out[1], ref_s, F32_TOL)
    assert_all_close(chunked, naive, F32_TOL)


@pytest.mark.parametrize(
    "per_channel, dtype", [(True, jnp.float32), (False, jnp.float32), (True, jnp.bfloat16)]
)
def test_long_sequence_strong_decay_is_finite(per_channel, dtype):
    t = 16384
    x = make_inputs(13, 1, t, 1, 16, 16, per_channel=per_channel, mode="strong", dtype=dtype)
    # Strong decay with exact zeros, plus a weak-decay stretch that lets the state grow.
    g = x["g"].at[:, t // 2 : t // 2 + 512].set(-1e-4)
    out = fwd_bwd(x["q"], x["k"], x["v"], g, x["s0"], x["do"], x["ds"], impl="chunk")
    for name, a in zip(NAMES, out, strict=True):
        assert bool(jnp.all(jnp.isfinite(a.astype(jnp.float32)))), f"non-finite {name}"


@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    b=st.integers(1, 2),
    t=st.integers(1, 90),
    h=st.integers(1, 2),
    dk=st.integers(1, 20),
    dv=st.integers(1, 20),
    chunk=st.sampled_from([8, 16, 24, 32, 64]),
    per_channel=st.booleans(),
    log_strength=st.floats(-4.0, 1.0),
    init=st.booleans(),
    n_cuts=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_property_chunk_matches_naive(
    b, t, h, dk, dv, chunk, per_channel, log_strength, init, n_cuts, seed
):
    rng = np.random.default_rng(seed)
    x = make_inputs(seed, b, t, h, dk, dv, per_channel=per_channel, mode="tau1", init=init)
    g = -(10.0**log_strength) * rng.uniform(0.0, 2.0, x["g"].shape)
    g = np.where(rng.uniform(size=g.shape) < 0.2, 0.0, g)  # some gates exactly zero
    seg = np.cumsum(rng.uniform(size=(b, t)) < n_cuts / max(t, 1), axis=1).astype(np.int32)
    args = (x["q"], x["k"], x["v"], jnp.asarray(g, jnp.float32), x["s0"], x["do"], x["ds"])
    ref = fwd_bwd(*args, jnp.asarray(seg), impl="naive")
    out = fwd_bwd(*args, jnp.asarray(seg), impl="chunk", chunk_size=chunk)
    assert_all_close(out, ref, F32_TOL)


def test_output_contract():
    x = make_inputs(1, 2, 20, 2, 8, 6, per_channel=False, mode="tau1", dtype=jnp.bfloat16)
    run = jax.jit(gla, static_argnames=("output_final_state", "scale", "impl"))
    o, s = run(x["q"], x["k"], x["v"], x["g"])
    assert o.shape == (2, 20, 2, 6) and o.dtype == jnp.bfloat16 and s is None
    _, s = run(x["q"], x["k"], x["v"], x["g"], output_final_state=True, impl="naive")
    assert s.shape == (2, 2, 8, 6) and s.dtype == jnp.float32
    q, k, v = as_f32(x["q"]), as_f32(x["k"]), as_f32(x["v"])
    np.testing.assert_array_equal(run(q, k, v, x["g"])[0], run(q, k, v, x["g"], scale=8**-0.5)[0])


def _bad_calls():
    """case → (call, regex the ValueError message must match)."""
    q = jnp.zeros((2, 10, 3, 8))
    v = jnp.zeros((2, 10, 3, 6))
    g = jnp.zeros((2, 10, 3))
    state = jnp.zeros((2, 3, 8, 6))
    return {
        "k shape": (lambda: gla(q, jnp.zeros((2, 10, 3, 7)), v, g), "^k must"),
        "v shape": (lambda: gla(q, q, jnp.zeros((2, 9, 3, 6)), g), "^v must"),
        "dtype": (lambda: gla(q, q.astype(jnp.bfloat16), v, g), "dtype"),
        "rank": (lambda: gla(q[0], q[0], v[0], g[0]), "rank 4"),
        "g rank": (lambda: gla(q, q, v, jnp.zeros((2, 10))), r"^g must have shape"),
        "g channels": (lambda: gla(q, q, v, jnp.zeros((2, 10, 3, 6))), r"^g must have shape"),
        "chunk_size": (lambda: gla(q, q, v, g, chunk_size=0), "chunk_size"),
        "chunk_size type": (lambda: gla(q, q, v, g, chunk_size=16.0), "chunk_size"),
        "impl": (lambda: gla(q, q, v, g, impl="triton"), "impl"),
        "initial_state": (
            lambda: gla(q, q, v, g, initial_state=jnp.zeros((2, 3, 6, 8))),
            "initial_state",
        ),
        "segment_ids": (
            lambda: gla(q, q, v, g, segment_ids=jnp.zeros((2, 11), jnp.int32)),
            "segment_ids",
        ),
        "segment_ids dtype": (
            lambda: gla(q, q, v, g, segment_ids=jnp.zeros((2, 10))),
            "segment_ids",
        ),
        "step g": (lambda: gla_step(q[:, 0], q[:, 0], v[:, 0], g, state), r"^g must have shape"),
        "step state": (
            lambda: gla_step(q[:, 0], q[:, 0], v[:, 0], g[:, 0], state[..., 0]),
            "^state must",
        ),
        "step rank": (lambda: gla_step(q, q, v, g, state), "rank 3"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_bad_input_raises(case):
    call, match = _bad_calls()[case]
    with pytest.raises(ValueError, match=match):
        call()
