"""Table-driven checks shared by every linear-recurrence op (the table: op_harness.SPECS).

Each check runs once per op row; the op files keep their op-specific cases.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest
from op_harness import SPECS, OpSpec

from memarch.testing import assert_close

GATED = [s for s in SPECS if s.ungated is not None]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_naive_equals_repeated_step(spec: OpSpec):
    """``op(impl="naive")`` is ``step`` applied token by token: o and S_T at 1e-6."""
    _, b, t, h, _, dv = spec.step_case
    x = spec.make(spec.step_case)
    gates = [x[n] for n in spec.gates]
    kw = {} if spec.step_scale is None else {"scale": spec.step_scale}
    o_ref, s_ref = spec.op(
        x["q"], x["k"], x["v"], *gates, initial_state=x["s0"], output_final_state=True,
        impl="naive", **kw,
    )  # fmt: skip
    step = jax.jit(functools.partial(spec.step, **kw))
    s, outs = x["s0"], []
    for i in range(t):
        o_t, s = step(x["q"][:, i], x["k"][:, i], x["v"][:, i], *(g[:, i] for g in gates), s)
        outs.append(o_t)
    assert s.dtype == jnp.float32 and outs[0].shape == (b, h, dv)
    assert_close("o", jnp.stack(outs, axis=1), o_ref, 1e-6)
    assert_close("S_T", s, s_ref, 1e-6)


@pytest.mark.parametrize("spec", GATED, ids=lambda s: s.name)
def test_zero_gate_equals_ungated_op(spec: OpSpec):
    """With a zero decay gate the op is its ungated form: o, S_T and the gradients of q, k, v,
    the other gates and S_0 under Σo² + ΣS_T², at 1e-5 (``chunk_size`` 32, ``impl="auto"``)."""
    x = spec.make(spec.zero_gate_case)
    names = ("q", "k", "v", *spec.gates[1:], "s0")

    def value_and_grads(op):
        def loss(q, k, v, *rest):
            *others, s0 = rest
            o, s = op(q, k, v, *others, initial_state=s0, output_final_state=True, chunk_size=32)
            return jnp.sum(o**2) + jnp.sum(s**2), (o, s)

        return jax.jit(jax.value_and_grad(loss, argnums=range(len(names)), has_aux=True))

    def gated(q, k, v, *others, **kw):
        return spec.op(q, k, v, jnp.zeros_like(x[spec.gates[0]]), *others, **kw)

    (_, ref), d_ref = value_and_grads(spec.ungated)(*(x[n] for n in names))
    (_, out), d_out = value_and_grads(gated)(*(x[n] for n in names))
    labels = ("o", "S_T", *(f"d{n}" for n in names))
    for name, a, r in zip(labels, (*out, *d_out), (*ref, *d_ref), strict=True):
        assert_close(name, a, r, 1e-5)
