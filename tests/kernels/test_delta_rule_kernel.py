"""Kernel-specific tests for the Pallas (gated) delta rule kernels, memarch.kernels.delta_rule:
the "loop" schedule, the NaN-poisoned TPU interpreter, g = 0, no final state, the segment_ids
fallback, dispatch and bad input. The ``impl="pallas"`` == naive comparisons (fp32 and bf16)
run from the op table, tests/ops/test_op_harness.py.

The reference is the ops' ``impl="naive"`` (an fp32 per-token ``lax.scan``). Every case
compares o, the final state and the gradients of every input under the loss
Σ(o⊙dO) + Σ(S_T⊙dS_T) at rel-RMS ≤ 1e-4 (fp32). On CPU the kernels run interpreted
(``interpret=None``); on GPU/TPU the same tests compile them. The ``interpret="tpu"`` cases run
the forward and backward pallas_calls in the TPU-simulating interpreter with uninitialised
memory poisoned with NaN, so an output block the kernel never writes fails the comparison.
Shapes are tiny (B, H ≤ 2, K, V ≤ 24, ≤ 7 chunks): interpret mode copies whole blocks per step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memarch.kernels import compile_target
from memarch.kernels import delta_rule as kernel
from memarch.ops import delta_rule, gated_delta_rule
from memarch.ops._dispatch import resolve_impl
from memarch.testing import assert_close

F32_TOL = 1e-4
WEAK, STRONG = (5e-4, 2e-3), (3.0, 8.0)  # ranges of −g: ≈ −1e-3 and ≈ −5
NAMES = ("q", "k", "v", "g", "beta", "initial_state")


def make_inputs(
    seed: int, t: int, *, b: int = 2, h: int = 2, dk: int = 16, dv: int = 24, gate=WEAK
) -> dict[str, jax.Array]:
    """fp32 inputs: L2-normalised k, −g log-uniform in ``gate`` (~20% exactly 0), β in (0, 2)."""
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((b, t, h, dk))
    g = -np.exp(rng.uniform(np.log(gate[0]), np.log(gate[1]), (b, t, h)))
    arrays = {
        "q": rng.standard_normal((b, t, h, dk)),
        "k": k / np.linalg.norm(k, axis=-1, keepdims=True),
        "v": rng.standard_normal((b, t, h, dv)),
        "g": np.where(rng.uniform(size=(b, t, h)) < 0.2, 0.0, g),
        "beta": rng.uniform(0.02, 1.98, (b, t, h)),
        "initial_state": rng.standard_normal((b, h, dk, dv)),
    }
    return {n: jnp.asarray(x, jnp.float32) for n, x in arrays.items()}


def run(fn, args: dict) -> dict[str, jax.Array]:
    """o, S_T and the gradient of every input of ``fn(args) -> (o, S_T)``."""
    b, t, h, dk = args["q"].shape
    dv = args["v"].shape[-1]
    rng = np.random.default_rng(1)
    d_o = jnp.asarray(rng.standard_normal((b, t, h, dv)), jnp.float32)
    d_s = jnp.asarray(rng.standard_normal((b, h, dk, dv)), jnp.float32)

    def loss(a):
        o, s = fn(a)
        return jnp.sum(o.astype(jnp.float32) * d_o) + jnp.sum(s * d_s), (o, s)

    (_, (o, s)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(args)
    return {"o": o, "S_T": s} | {f"d{n}": x for n, x in grads.items()}


def op_fn(gated: bool, impl: str, chunk_size: int = 64, segment_ids=None):
    """The op as ``args -> (o, S_T)``; ungated ops ignore ``args["g"]``."""

    def fn(a):
        kw = dict(
            initial_state=a.get("initial_state"),
            output_final_state=True,
            impl=impl,
            chunk_size=chunk_size,
            segment_ids=segment_ids,
        )
        if gated:
            return gated_delta_rule(a["q"], a["k"], a["v"], a["g"], a["beta"], **kw)
        return delta_rule(a["q"], a["k"], a["v"], a["beta"], **kw)

    return fn


def kernel_fn(chunk_size: int, **kw):
    """:func:`kernel.gated_delta_rule_pallas` as ``args -> (o, S_T)``."""

    def fn(a):
        return kernel.gated_delta_rule_pallas(
            a["q"], a["k"], a["v"], a["beta"], a.get("g"),
            initial_state=a.get("initial_state"), output_final_state=True,
            chunk_size=chunk_size, **kw,
        )  # fmt: skip

    return fn


def assert_all_close(out: dict, ref: dict, tol: float) -> None:
    assert out.keys() == ref.keys()
    for name in ref:
        assert_close(name, out[name], ref[name], tol)


@functools.cache
def _inputs(seed: int, t: int, gate: tuple[float, float], gated: bool, with_state: bool):
    args = make_inputs(seed, t, gate=gate)
    if not gated:
        del args["g"]
    if not with_state:
        del args["initial_state"]
    return args


# ----------------------------------------------------------------------------------------------
# schedules and interpreters (interpret=None: interpreted on CPU)


def test_loop_schedule_matches_naive():
    """The GPU schedule (chunk loop inside the kernel), interpreted."""
    args = _inputs(1, 37, STRONG, True, True)
    ref = run(op_fn(True, "naive"), args)
    assert_all_close(run(kernel_fn(16, schedule="loop"), args), ref, F32_TOL)


@pytest.mark.parametrize("schedule", ["grid", "loop"])
def test_tpu_interpreter_nan_poisoned(schedule):
    """Forward and backward pallas_calls in the TPU simulator, uninitialised memory = NaN."""
    args = _inputs(2, 20, WEAK, True, True)
    ref = run(op_fn(True, "naive"), args)
    out = run(kernel_fn(16, schedule=schedule, interpret="tpu"), args)
    assert_all_close(out, ref, F32_TOL)


def test_zero_gate_is_plain_delta_rule():
    args = _inputs(4, 20, WEAK, True, True)
    plain = {n: x for n, x in args.items() if n != "g"}
    zeros = plain | {"g": jnp.zeros_like(args["g"])}
    out = run(kernel_fn(16), zeros)
    del out["dg"]
    assert_all_close(out, run(kernel_fn(16), plain), 1e-6)


def test_without_final_state():
    """output_final_state=False: no state returned; the gradients see dS_T = 0."""
    args = _inputs(0, 37, WEAK, True, True)

    def loss(impl):
        def fn(a):
            o, s = gated_delta_rule(
                *(a[n] for n in NAMES[:5]), initial_state=a["initial_state"], impl=impl,
                chunk_size=16,
            )  # fmt: skip
            assert s is None
            return jnp.sum(o * jnp.cos(o)), o

        return jax.jit(jax.value_and_grad(fn, has_aux=True))(args)

    (_, o), grads = loss("pallas")
    (_, o_ref), grads_ref = loss("naive")
    assert_close("o", o, o_ref, F32_TOL)
    for name in NAMES:
        assert_close(f"d{name}", grads[name], grads_ref[name], F32_TOL)


# ----------------------------------------------------------------------------------------------
# packed sequences fall back to the XLA chunk form; dispatch


def test_segment_ids_fall_back_to_chunk():
    args = _inputs(5, 40, WEAK, True, True)
    seg = jnp.asarray(np.repeat([[0, 1, 2], [4, 4, 3]], [13, 17, 10], axis=1), jnp.int32)
    assert resolve_impl("pallas", kernel, chunk_size=16, segment_ids=seg) == "chunk"
    out = run(op_fn(True, "pallas", 16, seg), args)
    assert_all_close(out, run(op_fn(True, "chunk", 16, seg), args), 0.0)
    assert_all_close(out, run(op_fn(True, "naive", 16, seg), args), F32_TOL)


def test_resolve_impl():
    seg = jnp.zeros((1, 4), jnp.int32)
    assert resolve_impl("pallas", kernel, chunk_size=64, segment_ids=None) == "pallas"
    assert resolve_impl("naive", kernel, chunk_size=48, segment_ids=None) == "naive"
    with compile_target("cpu"):
        assert resolve_impl("auto", kernel, chunk_size=64, segment_ids=None) == "chunk"
    for accel in ("gpu", "tpu"):
        with compile_target(accel):
            assert resolve_impl("auto", kernel, chunk_size=64, segment_ids=None) == "pallas"
            assert resolve_impl("auto", kernel, chunk_size=64, segment_ids=seg) == "chunk"
            assert (
                resolve_impl("auto", kernel, chunk_size=48, segment_ids=None) == "chunk"
            )  # not a power of two


# ----------------------------------------------------------------------------------------------
# argument validation


def _good() -> dict[str, jax.Array]:
    return make_inputs(9, 5, b=1, h=2, dk=4, dv=6)


KERNEL_BAD = [
    ("chunk_size", {"chunk_size": 8}),
    ("chunk_size", {"chunk_size": 48}),
    ("chunk_size", {"chunk_size": 0}),
    ("interpret", {"interpret": "gpu"}),
    ("schedule", {"schedule": "scan"}),
    ("q", {"q": jnp.zeros((5, 2, 4))}),
    ("beta", {"beta": jnp.zeros((1, 5, 2, 1))}),
    ("g", {"g": jnp.zeros((1, 5, 2, 4))}),
    ("initial_state", {"initial_state": jnp.zeros((1, 2, 4, 5))}),
]


@pytest.mark.parametrize("name, change", KERNEL_BAD)
def test_kernel_bad_input_raises(name, change):
    a = _good() | change
    kw = {n: a.pop(n) for n in ("chunk_size", "interpret", "schedule", "initial_state") if n in a}
    with pytest.raises(ValueError, match=name):
        kernel.gated_delta_rule_pallas(a["q"], a["k"], a["v"], a["beta"], a["g"], **kw)


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("chunk_size", [8, 24])
def test_op_pallas_bad_chunk_size_raises(gated, chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        op_fn(gated, "pallas", chunk_size)(_good())
