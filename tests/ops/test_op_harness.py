"""Table-driven checks shared by every linear-recurrence op (the table: op_harness.SPECS).

Each check runs once per (op row, case of that row's grid); the op files keep their op-specific
cases. Criterion (docs/linear_attention.md §Test criterion): rel-RMS via
memarch.testing.assert_close on o, S_T and the gradient of every input (q, k, v, the gates,
S_0) under the loss Σ(o⊙dO) + Σ(S_T⊙dS_T). bf16 cases run the bf16 form on bf16 inputs and
compare it with the fp32 naive form on the *same* bf16-rounded values upcast to fp32, so they
measure the error the bf16 interface adds (output/gradient rounding), not input rounding.
Pallas kernels run interpreted on CPU (``interpret=None``) and compiled on GPU/TPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from op_harness import SPECS, Case, Inputs, OpSpec, cast, segment_bounds

from memarch.testing import assert_close

BF16_TOL, KERNEL_TOL = 1e-2, 1e-4
GATED = [s for s in SPECS if s.ungated is not None]


def table(field: str) -> list:
    """(spec, case) for every case in the row field ``field`` of every row, with ids."""
    return [
        pytest.param(spec, case, id=f"{spec.name}-{case.id}")
        for spec in SPECS
        for case in getattr(spec, field)
    ]


def outputs_and_grads(spec: OpSpec, fn, x: Inputs, **kw) -> dict[str, jax.Array]:
    """o ``[B, T, H, V]``, S_T ``[B, H, K, V]`` and ``d<name>`` for every input that is not None
    (q, k, v, the gates, s0) of the loss Σ(o⊙dO) + Σ(S_T⊙dS_T), for ``fn(q, k, v, *gates,
    initial_state=s0, output_final_state=True, **kw)``."""
    names = ("q", "k", "v", *spec.gates, "s0")
    args = {n: x[n] for n in names if x[n] is not None}

    def loss(a):
        o, s = fn(
            *(a[n] for n in names[:-1]), initial_state=a.get("s0"), output_final_state=True, **kw
        )
        return jnp.sum(o.astype(jnp.float32) * x["do"]) + jnp.sum(s * x["ds"]), (o, s)

    grads, (o, s) = jax.jit(jax.grad(loss, has_aux=True))(args)
    return {"o": o, "S_T": s} | {f"d{n}": g for n, g in grads.items()}


def assert_all_close(out: dict, ref: dict, tol: float, label: str = "") -> None:
    assert out.keys() == ref.keys()
    for name in ref:
        assert_close(label + name, out[name], ref[name], tol)


def assert_grads_nonzero(out: dict) -> None:
    """Gradients reach every input."""
    for name in out:
        if name.startswith("d"):
            assert float(jnp.abs(out[name]).max()) > 0, name


def upcast(x: Inputs) -> Inputs:
    return {n: None if a is None else a.astype(jnp.float32) for n, a in x.items()}


def assert_bf16_dtypes(out: dict, x: Inputs) -> None:
    """o in bf16, S_T in fp32, every gradient in its input's dtype."""
    assert out["o"].dtype == jnp.bfloat16 and out["S_T"].dtype == jnp.float32
    for name, a in x.items():
        if f"d{name}" in out:
            assert out[f"d{name}"].dtype == a.dtype, name


# ----------------------------------------------------------------------------------------------
# naive == step, zero gate == ungated op


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


# ----------------------------------------------------------------------------------------------
# chunk == naive


@pytest.mark.parametrize("spec, case", table("chunk_cases"))
def test_chunk_matches_naive(spec: OpSpec, case: Case):
    """The chunk form (``case.impl`` at ``case.chunk``) equals the naive form on o, S_T and
    every gradient at the row's ``tol``; every gradient is non-zero."""
    x = case.make()
    ref = outputs_and_grads(spec, spec.op, x, impl="naive")
    out = outputs_and_grads(spec, spec.op, x, impl=case.impl, chunk_size=case.chunk)
    assert_all_close(out, ref, spec.tol)
    assert_grads_nonzero(out)


@pytest.mark.parametrize("spec, case", table("bf16_cases"))
def test_bf16_chunk_matches_fp32_naive(spec: OpSpec, case: Case):
    """bf16 ``low_precision`` inputs: the chunk form against fp32 naive at 1e-2; o is bf16,
    S_T fp32, each gradient in its input's dtype."""
    low = cast(case.make(), spec.low_precision, jnp.bfloat16)
    out = outputs_and_grads(spec, spec.op, low, impl="chunk", chunk_size=case.chunk)
    assert_bf16_dtypes(out, low)
    assert_all_close(out, outputs_and_grads(spec, spec.op, upcast(low), impl="naive"), BF16_TOL)


# ----------------------------------------------------------------------------------------------
# packed sequences


@pytest.mark.parametrize("spec, case", table("packed_cases"))
def test_packed_segments_equal_separate_runs(spec: OpSpec, case: Case):
    """With ``segment_ids`` the naive and the chunk forms give, on each segment, the o and S_T
    of a separate naive run of that segment (the first from S_0, later ones from 0) and of the
    row's float64 reference; packed chunk == packed naive on every gradient."""
    x, seg = case.make(), case.segment_ids
    seq = ("q", "k", "v", *spec.gates)
    naive = outputs_and_grads(spec, spec.op, x, impl="naive", segment_ids=seg)
    chunk_kw = dict(impl=case.impl, chunk_size=case.chunk, segment_ids=seg)
    chunk = outputs_and_grads(spec, spec.op, x, **chunk_kw)
    runs = {"naive ": naive, "chunk ": chunk}
    for b, row in enumerate(seg):
        for i, (lo, hi) in enumerate(segment_bounds(row)):
            s0 = x["s0"][b : b + 1] if i == 0 and x["s0"] is not None else None
            o_ref, s_ref = spec.op(
                *(x[n][b : b + 1, lo:hi] for n in seq), initial_state=s0,
                output_final_state=True, impl="naive",
            )  # fmt: skip
            for label, out in runs.items():
                o = out["o"][b : b + 1, lo:hi]
                assert_close(f"{label}o[{b}, {lo}:{hi}]", o, o_ref, spec.tol)
        for label, out in runs.items():
            assert_close(f"{label}S_T[{b}]", out["S_T"][b : b + 1], s_ref, spec.tol)
    if spec.packed_reference is not None:
        o64, s64 = spec.packed_reference(x, seg)
        for label, out in runs.items():
            assert_close(f"{label}o (float64 reference)", out["o"], o64, spec.tol)
            assert_close(f"{label}S_T (float64 reference)", out["S_T"], s64, spec.tol)
    assert_all_close(chunk, naive, spec.tol)


# ----------------------------------------------------------------------------------------------
# long sequences, output contract


@pytest.mark.parametrize("spec, case", table("long_cases"))
def test_long_sequence_is_finite(spec: OpSpec, case: Case):
    """T = 16384 under strong decay (or β up to 2): o, S_T and every gradient stay finite."""
    out = outputs_and_grads(spec, spec.op, case.make(), impl=case.impl, chunk_size=case.chunk)
    for name, a in out.items():
        assert bool(jnp.all(jnp.isfinite(a.astype(jnp.float32)))), f"non-finite {name}"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.contract_case], ids=lambda s: s.name)
def test_output_contract(spec: OpSpec):
    """bf16 q, k, v: o ``[B, T, H, V]`` bf16 and no state unless asked; S_T ``[B, H, K, V]``
    fp32; the default scale is K^-1/2; the step gives o_t ``[B, H, V]`` bf16, S fp32."""
    _, b, t, h, dk, dv = spec.contract_case
    x = spec.make(spec.contract_case)
    gates = [x[n] for n in spec.gates]
    q, k, v = (x[n].astype(jnp.bfloat16) for n in ("q", "k", "v"))
    run = jax.jit(spec.op, static_argnames=("output_final_state", "scale", "impl"))
    o, s = run(q, k, v, *gates)
    assert o.shape == (b, t, h, dv) and o.dtype == jnp.bfloat16 and s is None
    _, s = run(q, k, v, *gates, output_final_state=True, impl="naive")
    assert s.shape == (b, h, dk, dv) and s.dtype == jnp.float32
    q32, k32, v32 = x["q"], x["k"], x["v"]
    np.testing.assert_array_equal(
        run(q32, k32, v32, *gates)[0], run(q32, k32, v32, *gates, scale=dk**-0.5)[0]
    )
    o_t, s_t = spec.step(q[:, 0], k[:, 0], v[:, 0], *(g[:, 0] for g in gates), x["s0"], scale=0.5)
    assert o_t.shape == (b, h, dv) and o_t.dtype == jnp.bfloat16
    assert s_t.shape == (b, h, dk, dv) and s_t.dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# Pallas kernels


@pytest.mark.parametrize("spec, case", table("kernel_cases"))
def test_kernel_matches_naive(spec: OpSpec, case: Case):
    """``spec.kernel`` (``chunk_size=case.chunk``, ``**case.kw``) equals the naive op on o, S_T
    and every gradient at 1e-4; every gradient is non-zero."""
    x = case.make()
    ref = outputs_and_grads(spec, spec.op, x, impl="naive")
    out = outputs_and_grads(spec, spec.kernel, x, chunk_size=case.chunk, **case.kw)
    assert_all_close(out, ref, KERNEL_TOL)
    assert_grads_nonzero(out)


@pytest.mark.parametrize("spec, case", table("kernel_bf16_cases"))
def test_bf16_kernel_matches_fp32_naive(spec: OpSpec, case: Case):
    """bf16 ``low_precision`` inputs: the kernel against fp32 naive at 1e-2; o bf16, S_T fp32,
    each gradient in its input's dtype."""
    low = cast(case.make(), spec.low_precision, jnp.bfloat16)
    out = outputs_and_grads(spec, spec.kernel, low, chunk_size=case.chunk, **case.kw)
    assert_bf16_dtypes(out, low)
    assert_all_close(out, outputs_and_grads(spec, spec.op, upcast(low), impl="naive"), BF16_TOL)
