"""Tests for memarch.ops.gated_delta_rule.

The reference is ``impl="naive"`` (an fp32 scan of ``gated_delta_rule_step``). fp32 comparisons
use rel-RMS ≤ 1e-4 on o, the final state and the gradients of every input under the loss
Σ(o⊙dO) + Σ(S_T⊙dS_T). The bf16 comparison runs the chunk form on bf16 q, k, v, β and compares
it with the naive fp32 run on the *same* bf16-rounded values upcast to fp32, at rel-RMS ≤ 1e-2:
it measures the error the bf16 interface adds (output/gradient rounding), not input rounding.
"""

from __future__ import annotations

import functools

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from op_harness import make_delta_inputs as make_inputs

from memarch.ops import gated_delta_rule, gated_delta_rule_step
from memarch.testing import assert_close

F32_TOL, BF16_TOL = 1e-4, 1e-2
NAMES = ("q", "k", "v", "g", "beta", "initial_state")


@functools.cache
def _value_and_grads(impl: str, chunk_size: int):
    def loss(args, d_o, d_s, segment_ids):
        o, s = gated_delta_rule(
            *(args[n] for n in NAMES[:5]),
            initial_state=args.get("initial_state"),
            output_final_state=True,
            segment_ids=segment_ids,
            impl=impl,
            chunk_size=chunk_size,
        )
        return jnp.sum(o.astype(jnp.float32) * d_o) + jnp.sum(s * d_s), (o, s)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def run(
    impl: str, args: dict, *, chunk_size: int = 64, segment_ids: jax.Array | None = None
) -> dict[str, jax.Array]:
    """o, final state and the gradient of every input under Σ(o⊙dO) + Σ(S⊙dS)."""
    b, t, h, dk = args["q"].shape
    rng = np.random.default_rng(1)
    d_o = jnp.asarray(rng.standard_normal((b, t, h, args["v"].shape[-1])), jnp.float32)
    d_s = jnp.asarray(rng.standard_normal((b, h, dk, args["v"].shape[-1])), jnp.float32)
    (_, (o, s)), grads = _value_and_grads(impl, chunk_size)(args, d_o, d_s, segment_ids)
    return {"o": o, "S_T": s} | {f"d{n}": x for n, x in grads.items()}


def assert_all_close(actual: dict, ref: dict, tol: float) -> None:
    assert actual.keys() == ref.keys()
    for name in ref:
        assert_close(name, actual[name], ref[name], tol)


# ----------------------------------------------------------------------------------------------
# chunk vs naive


@pytest.mark.parametrize(
    "t, chunk_size, dk, dv, with_state, beta_max, gate, key_corr, impl",
    [
        (1, 64, 16, 16, True, 1.0, (1e-4, 10.0), 0.0, "chunk"),
        (63, 16, 24, 40, False, 2.0, (1e-4, 10.0), 0.0, "chunk"),
        (75, 32, 24, 40, True, 1.0, (1.0, 10.0), 0.0, "auto"),  # strong decay
        # slow decay; β near 2 with near-parallel keys (the WY solve at its least accurate)
        (300, 64, 24, 40, True, 2.0, (1e-4, 1e-2), 10.0, "chunk"),
    ],
)
def test_chunk_matches_naive(t, chunk_size, dk, dv, with_state, beta_max, gate, key_corr, impl):
    kw = dict(gate=gate, beta_max=beta_max, key_corr=key_corr)
    args = make_inputs(0, 2, t, 2, dk, dv, **kw)
    if not with_state:
        del args["initial_state"]
    ref = run("naive", args)
    out = run(impl, args, chunk_size=chunk_size)
    assert_all_close(out, ref, F32_TOL)
    for name in args:  # gradients reach every input
        assert float(jnp.abs(out[f"d{name}"]).max()) > 0, name


def test_chunk_matches_naive_bf16():
    args = make_inputs(1, 2, 75, 2, 24, 40, beta_max=2.0)
    low = {
        n: x.astype(jnp.bfloat16) if n in ("q", "k", "v", "beta") else x for n, x in args.items()
    }
    ref = run("naive", {n: x.astype(jnp.float32) for n, x in low.items()})
    out = run("chunk", low, chunk_size=32)
    assert out["o"].dtype == jnp.bfloat16 and out["S_T"].dtype == jnp.float32
    assert out["dq"].dtype == jnp.bfloat16 and out["dg"].dtype == jnp.float32
    assert_all_close(out, ref, BF16_TOL)


# ----------------------------------------------------------------------------------------------
# packed sequences

# Row 0: segments [0..15 | 16 (length 1) | 17..31 | 32..63 (starts exactly at a chunk boundary)];
# row 1: a change mid-chunk, ids that are not increasing.
SEGMENTS = np.array([[0] * 16 + [1] + [2] * 15 + [3] * 32, [7] * 40 + [3] * 24], np.int32)


@functools.cache
def _fwd(impl: str, chunk_size: int):
    fn = functools.partial(
        gated_delta_rule, output_final_state=True, impl=impl, chunk_size=chunk_size
    )
    return jax.jit(fn)


def _segment_bounds(row: np.ndarray) -> list[tuple[int, int]]:
    starts = [0] + [t for t in range(1, len(row)) if row[t] != row[t - 1]] + [len(row)]
    return list(zip(starts[:-1], starts[1:], strict=True))


def test_segments_equal_separate_runs():
    args = make_inputs(3, 2, 64, 2, 16, 24)
    pos = [args[n] for n in NAMES[:5]]
    o, s = _fwd("chunk", 16)(*pos, initial_state=args["initial_state"], segment_ids=SEGMENTS)
    for b, row in enumerate(SEGMENTS):
        for i, (lo, hi) in enumerate(_segment_bounds(row)):
            s0 = args["initial_state"][b : b + 1] if i == 0 else None
            o_ref, s_ref = _fwd("naive", 64)(*(x[b : b + 1, lo:hi] for x in pos), initial_state=s0)
            assert_close(f"o[{b}, {lo}:{hi}]", o[b : b + 1, lo:hi], o_ref, F32_TOL)
        assert_close(f"S_T[{b}]", s[b : b + 1], s_ref, F32_TOL)


def test_segments_chunk_matches_naive_with_grads():
    args = make_inputs(4, 2, 64, 2, 16, 24, beta_max=2.0)
    ref = run("naive", args, segment_ids=SEGMENTS)
    assert_all_close(run("chunk", args, chunk_size=16, segment_ids=SEGMENTS), ref, F32_TOL)


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(1, 39), max_size=6),
    chunk_size=st.sampled_from([8, 16, 32]),
    beta_max=st.sampled_from([1.0, 2.0]),
)
def test_property_packed_chunk_matches_naive(seed, cuts, chunk_size, beta_max):
    args = make_inputs(seed, 1, 40, 2, 8, 8, beta_max=beta_max)
    seg = np.cumsum(np.isin(np.arange(40), cuts))[None].astype(np.int32)
    pos = [args[n] for n in NAMES[:5]]
    s0 = args["initial_state"]
    o_ref, s_ref = _fwd("naive", 64)(*pos, initial_state=s0, segment_ids=seg)
    o, s = _fwd("chunk", chunk_size)(*pos, initial_state=s0, segment_ids=seg)
    assert_close("o", o, o_ref, F32_TOL)
    assert_close("S_T", s, s_ref, F32_TOL)


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**16), split=st.sampled_from([16, 32]))
def test_property_split_call_equals_one_call(seed, split):
    """Running [0, split) then [split, T) from the carried state equals one call."""
    args = make_inputs(seed, 1, 48, 2, 8, 8)
    pos = [args[n] for n in NAMES[:5]]
    o, s = _fwd("chunk", 16)(*pos, initial_state=args["initial_state"])
    o1, s1 = _fwd("chunk", 16)(*(x[:, :split] for x in pos), initial_state=args["initial_state"])
    o2, s2 = _fwd("chunk", 16)(*(x[:, split:] for x in pos), initial_state=s1)
    assert_close("o", jnp.concatenate([o1, o2], axis=1), o, F32_TOL)
    assert_close("S_T", s2, s, F32_TOL)


# ----------------------------------------------------------------------------------------------
# step, reductions, long sequences


def test_step_dtypes_and_shapes():
    args = make_inputs(6, 2, 1, 3, 8, 12)
    qkv = [args[n][:, 0].astype(jnp.bfloat16) for n in ("q", "k", "v")]
    o, s = gated_delta_rule_step(
        *qkv, args["g"][:, 0], args["beta"][:, 0], args["initial_state"], scale=0.5
    )
    assert o.shape == (2, 3, 12) and o.dtype == jnp.bfloat16
    assert s.shape == (2, 3, 8, 12) and s.dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_long_sequence_strong_decay_is_finite(dtype):
    t = 16384
    args = make_inputs(8, 1, t, 1, 16, 16, beta_max=2.0)
    args["g"] = args["g"].at[:, t // 2 :].set(-10.0)  # strongest decay over half the sequence
    qkvb = {n: args[n].astype(dtype) for n in ("q", "k", "v", "beta")}

    def loss(q, k, v, g, beta, s0):
        o, s = gated_delta_rule(q, k, v, g, beta, initial_state=s0, output_final_state=True)
        return jnp.sum(o.astype(jnp.float32)) + jnp.sum(s), (o, s)

    xs = (qkvb["q"], qkvb["k"], qkvb["v"], args["g"], qkvb["beta"], args["initial_state"])
    (_, (o, s)), grads = jax.jit(jax.value_and_grad(loss, argnums=range(6), has_aux=True))(*xs)
    for name, x in zip(("o", "S_T", *NAMES), (o, s, *grads), strict=True):
        assert bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))), name


# ----------------------------------------------------------------------------------------------
# argument validation


def _good() -> dict[str, jax.Array]:
    return make_inputs(9, 2, 5, 2, 4, 6)


BAD_CALLS = [
    ("q", lambda a: {"q": a["q"][0]}),
    ("k", lambda a: {"k": a["k"][:, :4]}),
    ("v", lambda a: {"v": a["v"][:, :, :1]}),
    ("dtype", lambda a: {"k": a["k"].astype(jnp.bfloat16)}),
    ("g", lambda a: {"g": jnp.zeros((2, 5, 2, 4))}),  # per-channel gates are not accepted
    ("g", lambda a: {"g": a["g"][:, :4]}),
    ("g", lambda a: {"g": a["g"].astype(jnp.int32)}),
    ("beta", lambda a: {"beta": a["beta"][..., None]}),
    ("beta", lambda a: {"beta": a["beta"].astype(jnp.int32)}),
    ("initial_state", lambda a: {"initial_state": a["initial_state"][:, :, :, :5]}),
    ("segment_ids", lambda a: {"segment_ids": jnp.zeros((2, 4), jnp.int32)}),
    ("segment_ids", lambda a: {"segment_ids": jnp.zeros((2, 5), jnp.float32)}),
    ("chunk_size", lambda a: {"chunk_size": 0}),
    ("chunk_size", lambda a: {"chunk_size": -16}),
    ("impl", lambda a: {"impl": "fused"}),
]


@pytest.mark.parametrize("name, change", BAD_CALLS)
def test_bad_input_raises(name, change):
    args = _good()
    args |= change(args)
    kw = {
        n: args.pop(n) for n in ("initial_state", "segment_ids", "chunk_size", "impl") if n in args
    }
    with pytest.raises(ValueError, match=name):
        gated_delta_rule(args["q"], args["k"], args["v"], args["g"], args["beta"], **kw)


STEP_BAD = [
    ("q", lambda a: {"q": a["q"][:, None]}),
    ("k", lambda a: {"k": a["k"][:, :1]}),
    ("v", lambda a: {"v": a["v"][:1]}),
    ("g", lambda a: {"g": a["g"][..., None]}),
    ("beta", lambda a: {"beta": a["beta"][:1]}),
    ("state", lambda a: {"initial_state": a["initial_state"][..., :3]}),
]


@pytest.mark.parametrize("name, change", STEP_BAD)
def test_step_bad_input_raises(name, change):
    args = {n: x[:, 0] if n != "initial_state" else x for n, x in _good().items()}
    args |= change(args)
    with pytest.raises(ValueError, match=name):
        gated_delta_rule_step(*(args[n] for n in NAMES))
