"""Kernel-specific tests for memarch.kernels.gla (Pallas chunked GLA) against the naive op: the
"loop" (GPU) schedule, the NaN-poisoned TPU interpreter, dispatch, the segment_ids fallback
and bad input (compiling for TPU: tests/kernels/test_kernel_compile.py). The grid-schedule and
bf16 kernel == naive comparisons (GLA and linear attention) run from the op table,
tests/ops/test_op_harness.py.

Criterion (docs/linear_attention.md §Test criterion): rel-RMS via memarch.testing.assert_close on
o, S_T and the gradients of q, k, v, g, S_0 through the loss Σ(o⊙dO) + Σ(S_T⊙dS_T); fp32 1e-4.
``interpret=None`` interprets for a CPU target and compiles for GPU/TPU, so the same tests
check the compiled kernels where a device is present. Shapes are tiny: interpret mode copies whole
buffers per grid step and its compile time dominates.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memarch.kernels import compile_target
from memarch.kernels import gla as gla_kernel
from memarch.kernels.gla import gla_pallas
from memarch.ops import gla
from memarch.ops._dispatch import resolve_impl
from memarch.testing import assert_close

F32_TOL = 1e-4
NAMES = ("o", "S_T", "dq", "dk", "dv", "dg", "dS0")
GATES = {"weak": 1e-3, "strong": 5.0}  # typical |log decay| per token


def make_inputs(seed, b, t, h, dk, dv, *, per_channel, gate, init=True):
    """Random q, k, v, S_0, dO, dS_T and a log gate ≈ −GATES[gate] with 30 % exact zeros."""
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((b, t, h, dk)) for _ in range(2))
    v = rng.standard_normal((b, t, h, dv))
    g_shape = (b, t, h, dk) if per_channel else (b, t, h)
    g = -GATES[gate] * rng.uniform(0.5, 1.5, g_shape)
    g = np.where(rng.uniform(size=g_shape) < 0.3, 0.0, g)
    s0 = rng.standard_normal((b, h, dk, dv)) if init else None
    do, ds = rng.standard_normal((b, t, h, dv)), rng.standard_normal((b, h, dk, dv))
    arrays = dict(q=q, k=k, v=v, g=g, s0=s0, do=do, ds=ds)
    return {n: None if x is None else jnp.asarray(x, jnp.float32) for n, x in arrays.items()}


def fwd_bwd(run, x):
    """(o, S_T, grads of q, k, v, g[, S_0]) of Σ(o⊙dO) + Σ(S_T⊙dS_T) for ``run(q, k, v, g,
    initial_state=..., output_final_state=True)``."""
    argnums = (0, 1, 2, 3, 4) if x["s0"] is not None else (0, 1, 2, 3)

    def loss(q, k, v, g, s0):
        o, s = run(q, k, v, g, initial_state=s0, output_final_state=True)
        return jnp.sum(o.astype(jnp.float32) * x["do"]) + jnp.sum(s * x["ds"]), (o, s)

    grads, (o, s) = jax.jit(jax.grad(loss, argnums=argnums, has_aux=True))(
        x["q"], x["k"], x["v"], x["g"], x["s0"]
    )
    return (o, s, *grads)


def naive_reference(x):
    as_f32 = {n: a if a is None else a.astype(jnp.float32) for n, a in x.items()}
    return fwd_bwd(functools.partial(gla, impl="naive"), as_f32)


def assert_all_close(actual, ref, tol, label=""):
    assert len(actual) == len(ref)
    for name, a, r in zip(NAMES, actual, ref, strict=False):
        assert_close(f"{label}{name}", a, r, tol)


@pytest.mark.parametrize("per_channel, gate", [(True, "strong"), (False, "weak")])
def test_loop_kernel_matches_naive(per_channel, gate):
    """The GPU schedule (chunk loop inside each program; K, V padded to powers of two), run in
    the generic interpreter here."""
    x = make_inputs(3, 2, 37, 2, 12, 20, per_channel=per_channel, gate=gate)
    run = functools.partial(gla_pallas, chunk_size=16, schedule="loop", interpret=True)
    assert_all_close(fwd_bwd(run, x), naive_reference(x), F32_TOL)


@pytest.mark.parametrize("per_channel", [True, False])
def test_tpu_interpreter_with_poisoned_memory(per_channel):
    """The TPU-simulating interpreter with NaN-filled uninitialised memory runs the three
    pallas_calls: the primal forward, the forward that saves chunk states, and the backward."""
    x = make_inputs(5, 1, 20, 2, 8, 8, per_channel=per_channel, gate="weak")
    run = functools.partial(gla_pallas, chunk_size=8, interpret="tpu")
    o, s = jax.jit(run, static_argnames="output_final_state")(
        x["q"], x["k"], x["v"], x["g"], initial_state=x["s0"], output_final_state=True
    )
    ref = naive_reference(x)
    assert_close("primal o", o, ref[0], F32_TOL)
    assert_close("primal S_T", s, ref[1], F32_TOL)
    assert_all_close(fwd_bwd(run, x), ref, F32_TOL)


def test_op_dispatch_and_no_final_state():
    """gla(impl="pallas") runs the kernel (a pallas_call in the jaxpr), returns no state unless
    asked, and its gradients match the chunk form when only o is used."""
    x = make_inputs(9, 2, 37, 2, 16, 24, per_channel=True, gate="weak")
    args = (x["q"], x["k"], x["v"], x["g"])
    jaxpr = str(jax.make_jaxpr(functools.partial(gla, impl="pallas", chunk_size=16))(*args))
    assert "pallas_call" in jaxpr

    def loss(impl, q, k, v, g):
        o, s = gla(q, k, v, g, impl=impl, chunk_size=16)
        assert s is None
        return jnp.sum(o * x["do"])

    grad = lambda impl: jax.jit(jax.grad(functools.partial(loss, impl), (0, 1, 2, 3)))(*args)
    for name, a, r in zip(("dq", "dk", "dv", "dg"), grad("pallas"), grad("naive"), strict=True):
        assert_close(name, a, r, F32_TOL)


def test_segment_ids_fall_back_to_chunk_form():
    x = make_inputs(4, 2, 30, 2, 8, 8, per_channel=False, gate="weak")
    seg = jnp.asarray(np.repeat([[0, 1, 2]], 2, axis=0).repeat(10, axis=1), jnp.int32)
    args = (x["q"], x["k"], x["v"], x["g"])
    kw = dict(segment_ids=seg, initial_state=x["s0"], output_final_state=True, chunk_size=16)
    jaxpr = str(jax.make_jaxpr(functools.partial(gla, impl="pallas", **kw))(*args))
    assert "pallas_call" not in jaxpr
    out = gla(*args, impl="pallas", **kw)
    ref = gla(*args, impl="naive", **kw)
    assert_close("o", out[0], ref[0], F32_TOL)
    assert_close("S_T", out[1], ref[1], F32_TOL)


def test_auto_picks_pallas_only_on_device_targets():
    seg = jnp.zeros((1, 4), jnp.int32)
    with compile_target("cpu"):
        assert resolve_impl("auto", gla_kernel, chunk_size=64, segment_ids=None) == "chunk"
    with compile_target("tpu"):
        assert resolve_impl("auto", gla_kernel, chunk_size=64, segment_ids=None) == "pallas"
        assert resolve_impl("auto", gla_kernel, chunk_size=64, segment_ids=seg) == "chunk"
        assert (
            resolve_impl("auto", gla_kernel, chunk_size=24, segment_ids=None) == "chunk"
        )  # not a kernel chunk size
        assert resolve_impl("naive", gla_kernel, chunk_size=64, segment_ids=None) == "naive"


def test_effective_chunk():
    assert gla_kernel.effective_chunk(1, 64, "grid") == 8
    assert gla_kernel.effective_chunk(37, 64, "grid") == 64
    assert gla_kernel.effective_chunk(37, 16, "grid") == 16
    assert gla_kernel.effective_chunk(5, 64, "loop") == 16


def _bad_calls():
    """case → (call, regex the ValueError message must match)."""
    q = jnp.zeros((2, 10, 3, 8))
    v = jnp.zeros((2, 10, 3, 6))
    g = jnp.zeros((2, 10, 3))
    return {
        "interpret": (lambda: gla_pallas(q, q, v, g, interpret="gpu"), "^interpret must"),
        "chunk_size 24": (lambda: gla_pallas(q, q, v, g, chunk_size=24), "^chunk_size must"),
        "chunk_size 4": (lambda: gla_pallas(q, q, v, g, chunk_size=4), "^chunk_size must"),
        "chunk_size float": (lambda: gla_pallas(q, q, v, g, chunk_size=16.0), "^chunk_size"),
        "schedule": (lambda: gla_pallas(q, q, v, g, schedule="warp"), "^schedule must"),
        "g shape": (lambda: gla_pallas(q, q, v, jnp.zeros((2, 10))), "^g must have shape"),
        "state": (
            lambda: gla_pallas(q, q, v, g, initial_state=jnp.zeros((2, 3, 6, 8))),
            "^initial_state must",
        ),
        "op chunk_size": (lambda: gla(q, q, v, g, impl="pallas", chunk_size=24), "^chunk_size"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_bad_input_raises(case):
    call, match = _bad_calls()[case]
    with pytest.raises(ValueError, match=match):
        call()
