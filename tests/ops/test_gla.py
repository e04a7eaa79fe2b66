"""GLA-specific tests for memarch.ops.gla: a property test over random sizes, gate strengths and
packings, and the bad-input table. The checks shared by every linear-recurrence op (chunk ==
naive, bf16, packing, long sequences, output contract, the Pallas kernel) run from the op table,
test_op_harness.py.

Criterion (docs/linear_attention.md §Test criterion): rel-RMS via memarch.testing.assert_close on
o, S_T and the gradients of q, k, v, g, S_0 through the loss Σ(o⊙dO) + Σ(S_T⊙dS_T).
fp32: 1e-4.
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

F32_TOL = 1e-4
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
