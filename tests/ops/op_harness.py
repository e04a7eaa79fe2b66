"""The op table for the table-driven op tests (test_op_harness.py) and the input recipes of the
linear-recurrence ops (also used by each op's own test file).

An :class:`OpSpec` says how to make an op's inputs (q, k, v, its gates in call order and the
initial state S_0 ``[B, H, K, V]``), how to call its sequence function and its one-token step,
and, for a gated op, which op it reduces to with a zero gate. Adding a row to :data:`SPECS`
gives that op the table's checks:

* naive == repeated step: ``op(impl="naive")`` against ``step`` applied token by token, on o
  ``[B, T, H, V]`` and the final state at rel-RMS ≤ 1e-6;
* zero gate == the ungated op: o, the final state and the gradient of every shared input under
  the loss Σo² + ΣS_T² at rel-RMS ≤ 1e-5 (``chunk_size`` 32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from memarch.ops import (
    delta_rule,
    delta_rule_step,
    gated_delta_rule,
    gated_delta_rule_step,
    gla,
    gla_step,
    linear_attention,
    linear_attention_step,
)

Case = tuple[int, int, int, int, int, int]  # (seed, B, T, H, K, V)


# ----------------------------------------------------------------------------------------------
# input recipes


def make_gate(rng, shape, mode: str, zero_frac: float = 0.3) -> np.ndarray:
    """Log decay: 'weak' ≈ −1e-4, 'strong' ≈ −10 per token, 'tauX' = logsigmoid(u)/X; a random
    subset is exactly zero."""
    if mode == "weak":
        g = -1e-4 * rng.uniform(0.5, 1.5, shape)
    elif mode == "strong":
        g = -10.0 * rng.uniform(0.9, 1.1, shape)
    else:
        u = rng.standard_normal(shape)
        g = -np.logaddexp(0.0, -u) / float(mode.removeprefix("tau"))
    return np.where(rng.uniform(size=shape) < zero_frac, 0.0, g)


def make_gla_inputs(seed, b, t, h, dk, dv, *, per_channel, mode, init=True, dtype=jnp.float32):
    """GLA inputs: q, k ``[B, T, H, K]``, v ``[B, T, H, V]`` (in ``dtype``), g ``[B, T, H(, K)]``
    (:func:`make_gate`), s0 ``[B, H, K, V]`` (None without ``init``), cotangents do, ds."""
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((b, t, h, dk)) for _ in range(2))
    v = rng.standard_normal((b, t, h, dv))
    g = make_gate(rng, (b, t, h, dk) if per_channel else (b, t, h), mode)
    s0 = rng.standard_normal((b, h, dk, dv)) if init else None
    do = rng.standard_normal((b, t, h, dv))
    ds = rng.standard_normal((b, h, dk, dv))
    arrays = dict(q=q, k=k, v=v, g=g, s0=s0, do=do, ds=ds)  # g, S_0, dO, dS_T stay float32
    as_dtype = lambda name: dtype if name in ("q", "k", "v") else jnp.float32
    return {n: None if x is None else jnp.asarray(x, as_dtype(n)) for n, x in arrays.items()}


def make_linear_attention_inputs(seed, b, t, h, dk, dv, *, init=True, dtype=jnp.float32):
    """Linear-attention inputs: q, k, v (in ``dtype``), s0 (None without ``init``), do, ds."""
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((b, t, h, dk)) for _ in range(2))
    v = rng.standard_normal((b, t, h, dv))
    s0 = rng.standard_normal((b, h, dk, dv)) if init else None
    do = rng.standard_normal((b, t, h, dv))
    ds = rng.standard_normal((b, h, dk, dv))
    arrays = dict(q=q, k=k, v=v, s0=s0, do=do, ds=ds)  # S_0, dO, dS_T stay float32
    as_dtype = lambda name: dtype if name in ("q", "k", "v") else jnp.float32
    return {n: None if x is None else jnp.asarray(x, as_dtype(n)) for n, x in arrays.items()}


def make_delta_inputs(
    seed: int,
    b: int,
    t: int,
    h: int,
    dk: int,
    dv: int,
    *,
    gated: bool = True,
    gate: tuple[float, float] = (1e-4, 10.0),
    beta_max: float = 1.0,
    key_corr: float = 0.0,
) -> dict[str, jax.Array]:
    """Random fp32 (gated) delta-rule inputs (numpy, so no XLA compiles): L2-normalised k
    (sharing a direction with weight ``key_corr``); with ``gated`` a per-token log decay −g
    log-uniform in ``gate`` with ~20% exactly 0; β uniform in (0, beta_max); initial_state."""
    rng = np.random.default_rng(seed)
    k = key_corr * rng.standard_normal((b, 1, h, dk)) + rng.standard_normal((b, t, h, dk))
    if gated:
        g = -np.exp(rng.uniform(np.log(gate[0]), np.log(gate[1]), (b, t, h)))
    arrays = {
        "q": rng.standard_normal((b, t, h, dk)),
        "k": k / np.linalg.norm(k, axis=-1, keepdims=True),
        "v": rng.standard_normal((b, t, h, dv)),
    }
    if gated:
        arrays["g"] = np.where(rng.uniform(size=(b, t, h)) < 0.2, 0.0, g)
    arrays["beta"] = beta_max * rng.uniform(0.02, 0.98, (b, t, h))
    arrays["initial_state"] = rng.standard_normal((b, h, dk, dv))
    return {n: jnp.asarray(x, jnp.float32) for n, x in arrays.items()}


# ----------------------------------------------------------------------------------------------
# the op table


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One op in the table.

    ``make(case)`` returns q, k, v, the gates named in ``gates`` (call order) and ``s0``.
    ``op(q, k, v, *gates, **kw)`` is the sequence function, ``step(q_t, k_t, v_t, *gates_t,
    state, scale=)`` the decode step. ``step_case`` and ``step_scale`` fix the naive == step
    check. A gated op names its first gate the decay, ``ungated`` the op it equals when that
    gate is zero (``ungated(q, k, v, *gates[1:], **kw)``) and ``zero_gate_case`` its inputs.
    """

    name: str
    op: Callable
    step: Callable
    gates: tuple[str, ...]
    make: Callable[[Case], dict[str, jax.Array]]
    step_case: Case
    step_scale: float | None = None
    ungated: Callable | None = None
    zero_gate_case: Case | None = None


def _delta(gated: bool) -> Callable[[Case], dict[str, jax.Array]]:
    def make(case: Case) -> dict[str, jax.Array]:
        x = make_delta_inputs(*case, gated=gated, beta_max=2.0)
        x["s0"] = x.pop("initial_state")
        return x

    return make


SPECS = [
    OpSpec(
        "gla_per_channel",
        gla,
        gla_step,
        ("g",),
        lambda c: make_gla_inputs(*c, per_channel=True, mode="tau1"),
        step_case=(5, 2, 12, 3, 8, 12),
        step_scale=0.3,
        ungated=linear_attention,
        zero_gate_case=(11, 2, 75, 2, 24, 40),
    ),
    OpSpec(
        "gla_per_head",
        gla,
        gla_step,
        ("g",),
        lambda c: make_gla_inputs(*c, per_channel=False, mode="tau1"),
        step_case=(5, 2, 12, 3, 8, 12),
        step_scale=0.3,
        ungated=linear_attention,
        zero_gate_case=(11, 2, 75, 2, 24, 40),
    ),
    OpSpec(
        "linear_attention",
        linear_attention,
        linear_attention_step,
        (),
        lambda c: make_linear_attention_inputs(*c),
        step_case=(5, 2, 12, 3, 8, 12),
        step_scale=0.3,
    ),
    OpSpec(
        "gated_delta_rule",
        gated_delta_rule,
        gated_delta_rule_step,
        ("g", "beta"),
        _delta(gated=True),
        step_case=(5, 2, 7, 2, 8, 12),
        ungated=delta_rule,
        zero_gate_case=(7, 2, 75, 2, 24, 40),
    ),
    OpSpec(
        "delta_rule", delta_rule, delta_rule_step, ("beta",), _delta(False), (5, 2, 7, 2, 8, 12)
    ),
]
