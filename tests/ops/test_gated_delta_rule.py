"""Tests specific to memarch.ops.gated_delta_rule: property tests over random packings and over
splitting a sequence into two calls that carry the state, and the bad-input tables of the op
and its step. The checks shared by every linear-recurrence op (chunk == naive on o, S_T and
every gradient, bf16, packed segments == separate runs, long sequences, output contract, the
Pallas kernel) run from the op table, test_op_harness.py.

The reference is ``impl="naive"`` (an fp32 scan of ``gated_delta_rule_step``); comparisons use
rel-RMS ≤ 1e-4 on o and the final state.
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

F32_TOL = 1e-4
NAMES = ("q", "k", "v", "g", "beta", "initial_state")


@functools.cache
def _fwd(impl: str, chunk_size: int):
    fn = functools.partial(
        gated_delta_rule, output_final_state=True, impl=impl, chunk_size=chunk_size
    )
    return jax.jit(fn)


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
