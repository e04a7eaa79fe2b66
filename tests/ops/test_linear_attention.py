"""Linear-attention-specific tests for memarch.ops.linear_attention: a property test over random
sizes and packings, and the bad-input table. The checks shared by every linear-recurrence op
(chunk == naive, bf16, packing, long sequences, output contract, the Pallas kernel) run from the
op table, test_op_harness.py.

Criterion (docs/linear_attention.md §Test criterion): rel-RMS via memarch.testing.assert_close on
o, S_T and the gradients of q, k, v, S_0 through the loss Σ(o⊙dO) + Σ(S_T⊙dS_T).
fp32: 1e-5.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_harness import make_linear_attention_inputs as make_inputs

from memarch.ops import linear_attention, linear_attention_step
from memarch.testing import assert_close

F32_TOL = 1e-5
NAMES = ("o", "S_T", "dq", "dk", "dv", "dS0")


@functools.partial(jax.jit, static_argnames=("impl", "chunk_size"))
def fwd_bwd(q, k, v, s0, do, ds, seg=None, *, impl, chunk_size=64):
    """(o, S_T, grads of (q, k, v, S_0)) for the loss Σ(o⊙dO) + Σ(S_T⊙dS_T)."""

    kw = dict(output_final_state=True, segment_ids=seg, impl=impl, chunk_size=chunk_size)

    def loss(q, k, v, s0):
        o, s = linear_attention(q, k, v, initial_state=s0, **kw)
        return jnp.sum(o.astype(jnp.float32) * do) + jnp.sum(s * ds), (o, s)

    grads, (o, s) = jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, s0)
    return (o, s, *grads)


def assert_all_close(actual, ref, tol, label=""):
    for name, a, r in zip(NAMES, actual, ref, strict=True):
        if r is not None:
            assert_close(f"{label}{name}", a, r, tol)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    b=st.integers(1, 2),
    t=st.integers(1, 90),
    h=st.integers(1, 2),
    dk=st.integers(1, 20),
    dv=st.integers(1, 20),
    chunk=st.sampled_from([8, 16, 24, 32, 64]),
    init=st.booleans(),
    n_cuts=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_property_chunk_matches_naive(b, t, h, dk, dv, chunk, init, n_cuts, seed):
    rng = np.random.default_rng(seed)
    x = make_inputs(seed, b, t, h, dk, dv, init=init)
    seg = np.cumsum(rng.uniform(size=(b, t)) < n_cuts / max(t, 1), axis=1).astype(np.int32)
    args = (x["q"], x["k"], x["v"], x["s0"], x["do"], x["ds"], jnp.asarray(seg))
    assert_all_close(
        fwd_bwd(*args, impl="chunk", chunk_size=chunk), fwd_bwd(*args, impl="naive"), F32_TOL
    )


def _bad_calls():
    """case → (call, regex the ValueError message must match)."""
    q = jnp.zeros((2, 10, 3, 8))
    v = jnp.zeros((2, 10, 3, 6))
    state = jnp.zeros((2, 3, 8, 6))
    la = linear_attention
    return {
        "k shape": (lambda: la(q, jnp.zeros((2, 10, 3, 7)), v), "^k must"),
        "v shape": (lambda: la(q, q, jnp.zeros((2, 10, 4, 6))), "^v must"),
        "dtype": (lambda: la(q, q, v.astype(jnp.bfloat16)), "dtype"),
        "rank": (lambda: la(q[0], q[0], v[0]), "rank 4"),
        "chunk_size": (lambda: la(q, q, v, chunk_size=-1), "chunk_size"),
        "impl": (lambda: la(q, q, v, impl="fused"), "impl"),
        "initial_state": (lambda: la(q, q, v, initial_state=state[:1]), "initial_state"),
        "segment_ids": (lambda: la(q, q, v, segment_ids=jnp.zeros((10,), jnp.int32)), "segment"),
        "step state": (
            lambda: linear_attention_step(q[:, 0], q[:, 0], v[:, 0], state[:, :2]),
            "^state must",
        ),
        "step k": (lambda: linear_attention_step(q[:, 0], q[:, 0, :2], v[:, 0], state), "^k must"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_bad_input_raises(case):
    call, match = _bad_calls()[case]
    with pytest.raises(ValueError, match=match):
        call()
