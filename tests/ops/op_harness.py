"""The op table for the table-driven op tests (test_op_harness.py) and the input recipes of the
linear-recurrence ops (also used by each op's own test file).

An :class:`OpSpec` says how to make an op's inputs (q, k, v, its gates in call order and the
initial state S_0 ``[B, H, K, V]``), how to call its sequence function, its one-token step and
(where it has one) its Pallas kernel, and carries the op's own grid of :class:`Case` s for each
check. Adding a row to :data:`SPECS` gives that op the table's checks (test_op_harness.py):

* naive == repeated step (o, S_T at rel-RMS ≤ 1e-6);
* zero gate == the ungated op (o, S_T, every shared gradient at 1e-5);
* chunk == naive on o, S_T and the gradient of every input (q, k, v, the gates, S_0) under
  Σ(o⊙dO) + Σ(S_T⊙dS_T), at the row's ``tol``; every gradient is non-zero;
* bf16 chunk == fp32 naive on the same bf16-rounded inputs, at 1e-2;
* packed segments == separate naive runs of each segment (o, S_T; also against the row's
  float64 ``packed_reference``), and packed chunk == packed naive on every gradient;
* a T = 16384 sequence (strong decay / β up to 2) keeps o, S_T and every gradient finite;
* the output contract (shapes and dtypes of op and step, default scale K^-1/2);
* Pallas kernel == naive on o, S_T and every gradient at 1e-4 (bf16 kernel: 1e-2).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from memarch.kernels.gla import gla_pallas
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

Sizes = tuple[int, int, int, int, int, int]  # (seed, B, T, H, K, V)
Inputs = dict[str, jax.Array | None]


# ----------------------------------------------------------------------------------------------
# input recipes


def make_gate(rng, shape, mode: str, zero_frac: float = 0.3) -> np.ndarray:
    """Log decay: 'weak' ≈ −1e-4, 'strong' ≈ −10 per token, 'tauX' = logsigmoid(u)/X,
    'rateX' = −X·U(0.5, 1.5); a random subset is exactly zero."""
    if mode == "weak":
        g = -1e-4 * rng.uniform(0.5, 1.5, shape)
    elif mode == "strong":
        g = -10.0 * rng.uniform(0.9, 1.1, shape)
    elif mode.startswith("rate"):
        g = -float(mode.removeprefix("rate")) * rng.uniform(0.5, 1.5, shape)
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


def delta_case_inputs(*sizes, init: bool = True, unit_cotangents: bool = False, **kw) -> Inputs:
    """:func:`make_delta_inputs` in the table's names (``s0``; None without ``init``) with the
    cotangents dO ``[B, T, H, V]`` and dS_T ``[B, H, K, V]``: standard normal from seed 1, or all
    ones with ``unit_cotangents`` (the loss Σo + ΣS_T)."""
    x: Inputs = dict(make_delta_inputs(*sizes, **kw))
    s0 = x.pop("initial_state")
    x["s0"] = s0 if init else None
    b, t, h, dk = x["q"].shape
    dv = x["v"].shape[-1]
    if unit_cotangents:
        x["do"], x["ds"] = jnp.ones((b, t, h, dv)), jnp.ones((b, h, dk, dv))
    else:
        rng = np.random.default_rng(1)
        x["do"] = jnp.asarray(rng.standard_normal((b, t, h, dv)), jnp.float32)
        x["ds"] = jnp.asarray(rng.standard_normal((b, h, dk, dv)), jnp.float32)
    return x


def cast(x: Inputs, names: tuple[str, ...], dtype) -> Inputs:
    """``x`` with the arrays named in ``names`` cast to ``dtype``."""
    return {n: a.astype(dtype) if n in names and a is not None else a for n, a in x.items()}


def with_gate_span(x: Inputs, lo: int, hi: int | None, value: float) -> Inputs:
    """``x`` with the log decay ``g`` set to ``value`` on tokens [lo, hi)."""
    return x | {"g": x["g"].at[:, lo:hi].set(value)}


def decay_reference(x: Inputs, segment_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 numpy recurrence S_t = diag(exp g_t) S_{t−1} + k_t v_tᵀ, o_t = K^-1/2 S_tᵀ q_t
    (no g: linear attention), run separately on each packed segment of each row; the first
    segment of a row starts from s0, later ones from 0. Returns o ``[B, T, H, V]``, S_T."""
    q, k, v = (np.asarray(x[n], np.float64) for n in ("q", "k", "v"))
    b, t, h, dk = q.shape
    g = np.zeros(q.shape) if x.get("g") is None else np.asarray(x["g"], np.float64)
    if g.ndim == 3:
        g = np.broadcast_to(g[..., None], q.shape)
    o = np.zeros(v.shape)
    s_final = np.zeros((b, h, dk, v.shape[-1]))
    for row in range(b):
        for seg, (lo, hi) in enumerate(segment_bounds(segment_ids[row])):
            first = seg == 0 and x["s0"] is not None
            s = np.array(x["s0"][row], np.float64) if first else np.zeros_like(s_final[row])
            for i in range(lo, hi):
                s = np.exp(g[row, i])[..., None] * s + k[row, i][..., None] * v[row, i][:, None]
                o[row, i] = dk**-0.5 * np.einsum("hkv,hk->hv", s, q[row, i])
        s_final[row] = s
    return o, s_final


def segment_bounds(row: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) of each packed segment of one row of segment ids (a new one where the id
    changes)."""
    row = np.asarray(row)
    starts = [0, *(np.flatnonzero(row[1:] != row[:-1]) + 1), len(row)]
    return list(zip(starts[:-1], starts[1:], strict=True))


# Packed segment ids [B = 2, T = 75]: row 0 is [0..15 | 16] (a length-1 segment at a chunk
# start) | changes at 32 and 48 (chunk boundaries for chunk 16) | one inside a chunk at 57;
# row 1 a length-1 first segment, then non-monotone ids.
PACKED_75 = np.array(
    [
        [0] * 16 + [1] + [2] * 15 + [3] * 16 + [4] * 9 + [5] * 18,
        [7] + [3] * 30 + [7] * 33 + [3] * 11,
    ],
    np.int32,
)
# Packed segment ids [B = 2, T = 64]: row 0 [0..15 | 16 (length 1) | 17..31 | 32..63 (starts
# exactly at a chunk boundary)]; row 1 a change mid-chunk, ids that are not increasing.
PACKED_64 = np.array([[0] * 16 + [1] + [2] * 15 + [3] * 32, [7] * 40 + [3] * 24], np.int32)


# ----------------------------------------------------------------------------------------------
# the op table


@dataclasses.dataclass(frozen=True)
class Case:
    """One input set of a table check.

    ``make()`` returns q, k, v, the op's gates, s0 (None: no initial state) and the cotangents
    do, ds of the loss Σ(o⊙dO) + Σ(S_T⊙dS_T). ``chunk`` and ``impl`` pick the form under test,
    ``segment_ids`` ``[B, T]`` packs sequences, ``kw`` goes to the kernel call.
    """

    id: str
    make: Callable[[], Inputs]
    chunk: int = 64
    impl: str = "chunk"
    segment_ids: np.ndarray | None = None
    kw: Mapping[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One op in the table.

    ``make(sizes)`` returns q, k, v, the gates named in ``gates`` (call order) and ``s0``.
    ``op(q, k, v, *gates, **kw)`` is the sequence function, ``step(q_t, k_t, v_t, *gates_t,
    state, scale=)`` the decode step and ``kernel(q, k, v, *gates, chunk_size=, **kw)`` the
    Pallas form (None: no kernel). ``step_case`` and ``step_scale`` fix the naive == step
    check. A gated op names its first gate the decay, ``ungated`` the op it equals when that
    gate is zero (``ungated(q, k, v, *gates[1:], **kw)``) and ``zero_gate_case`` its inputs.
    ``tol`` is the fp32 chunk == naive tolerance; ``low_precision`` the inputs the bf16 cases
    cast; ``contract_case`` (None: not checked on this row) the output-contract inputs;
    ``packed_reference(x, segment_ids) -> (o, S_T)`` an independent float64 reference. The
    ``*_cases`` are the row's grid of each check (empty: the check skips this row).
    """

    name: str
    op: Callable
    step: Callable
    gates: tuple[str, ...]
    make: Callable[[Sizes], Inputs]
    step_case: Sizes
    step_scale: float | None = None
    ungated: Callable | None = None
    zero_gate_case: Sizes | None = None
    tol: float = 1e-4
    low_precision: tuple[str, ...] = ("q", "k", "v")
    kernel: Callable | None = None
    contract_case: Sizes | None = None
    packed_reference: Callable[[Inputs, np.ndarray], tuple] | None = None
    chunk_cases: tuple[Case, ...] = ()
    bf16_cases: tuple[Case, ...] = ()
    packed_cases: tuple[Case, ...] = ()
    long_cases: tuple[Case, ...] = ()
    kernel_cases: tuple[Case, ...] = ()
    kernel_bf16_cases: tuple[Case, ...] = ()


def _gla_chunk(t, chunk, dk, dv, per_channel, mode, init) -> Case:
    make = functools.partial(
        make_gla_inputs, t, 2, t, 2, dk, dv, per_channel=per_channel, mode=mode, init=init
    )
    return Case(f"T{t}-c{chunk}-{dk}x{dv}-{mode}-{'s0' if init else 'no_s0'}", make, chunk)


def _gla_kernel(t, chunk, per_channel, rate, init) -> Case:
    """The grid-schedule kernel on T × chunk × gate strength ``rate`` (|log decay|)."""
    make = functools.partial(
        make_gla_inputs, t + chunk, 2, t, 2, 16, 24, per_channel=per_channel,
        mode=f"rate{rate}", init=init,
    )  # fmt: skip
    cid = f"T{t}-c{chunk}-rate{rate}-{'s0' if init else 'no_s0'}"
    return Case(cid, make, chunk, kw={"schedule": "grid"})


def _gla_long(per_channel: bool, dtype) -> Case:
    """T = 16384, strong decay with exact zeros, plus a weak-decay stretch that lets the state
    grow."""

    def make() -> Inputs:
        kw = dict(per_channel=per_channel, mode="strong", dtype=dtype)
        return with_gate_span(make_gla_inputs(13, 1, 16384, 1, 16, 16, **kw), 8192, 8704, -1e-4)

    return Case(jnp.dtype(dtype).name, make)


def _gla_row(per_channel: bool) -> OpSpec:
    """GLA with a per-channel ``[B, T, H, K]`` or a per-head ``[B, T, H]`` log decay g."""
    pc = per_channel
    make = functools.partial(make_gla_inputs, per_channel=pc)
    # A covering subset of T × chunk × head dims × gate strength × initial state.
    chunk_grid = (
        [(1, 64, 24, 40, "tau1", True), (63, 16, 24, 40, "strong", False),
         (300, 64, 24, 40, "tau10", True), (300, 32, 16, 48, "weak", False)]
        if pc else
        [(63, 64, 16, 16, "tau0.1", True), (75, 32, 32, 24, "weak", True),
         (75, 16, 24, 40, "strong", True), (300, 16, 24, 40, "tau1", False)]
    )  # fmt: skip
    # T = 1 runs one chunk of 8, 37 and 100 leave a partial last chunk. T = 1 always has an
    # initial state: without one, dg is exactly 0 and the cumsum identity leaves a ~1e-6
    # cancellation residue.
    kernel_grid = (
        [(1, 16, "5", True), (37, 16, "1e-3", True), (100, 16, "5", False),
         (100, 32, "1e-3", True)]
        if pc else
        [(1, 32, "1e-3", True), (37, 32, "5", False), (100, 16, "1e-3", True),
         (100, 32, "5", True)]
    )  # fmt: skip
    bf16_sizes = (7, 2, 75, 2, 24, 40)
    bf16_mode, packed_mode, packed_chunk = ("tau1", "tau1", 16) if pc else ("strong", "tau0.1", 32)
    return OpSpec(
        "gla_per_channel" if pc else "gla_per_head",
        gla,
        gla_step,
        ("g",),
        lambda c: make(*c, mode="tau1"),
        step_case=(5, 2, 12, 3, 8, 12),
        step_scale=0.3,
        ungated=linear_attention,
        zero_gate_case=(11, 2, 75, 2, 24, 40),
        kernel=gla_pallas,
        contract_case=None if pc else (1, 2, 20, 2, 8, 6),
        packed_reference=decay_reference,
        chunk_cases=tuple(_gla_chunk(t, c, dk, dv, pc, m, i) for t, c, dk, dv, m, i in chunk_grid),
        bf16_cases=(Case(bf16_mode, functools.partial(make, *bf16_sizes, mode=bf16_mode), 32),),
        packed_cases=(
            Case(
                f"{packed_mode}-c{packed_chunk}",
                functools.partial(make, 3, 2, 75, 2, 24, 40, mode=packed_mode),
                packed_chunk,
                segment_ids=PACKED_75,
            ),
        ),
        long_cases=(_gla_long(pc, jnp.float32), *([_gla_long(pc, jnp.bfloat16)] if pc else [])),
        kernel_cases=tuple(_gla_kernel(t, c, pc, r, i) for t, c, r, i in kernel_grid),
        kernel_bf16_cases=(
            (Case("rate1e-3", functools.partial(make, 7, 2, 37, 2, 16, 24, mode="rate1e-3"), 16),)
            if pc else ()
        ),
    )  # fmt: skip


def _linear_attention_row() -> OpSpec:
    make = make_linear_attention_inputs

    def chunk_case(t, chunk, dk, dv, init) -> Case:
        cid = f"T{t}-c{chunk}-{dk}x{dv}-{'s0' if init else 'no_s0'}"
        return Case(cid, functools.partial(make, t, 2, t, 2, dk, dv, init=init), chunk)

    def long_case(dtype) -> Case:
        return Case(
            jnp.dtype(dtype).name, functools.partial(make, 13, 1, 16384, 1, 16, 16, dtype=dtype)
        )

    return OpSpec(
        "linear_attention",
        linear_attention,
        linear_attention_step,
        (),
        lambda c: make(*c),
        step_case=(5, 2, 12, 3, 8, 12),
        step_scale=0.3,
        tol=1e-5,
        kernel=functools.partial(linear_attention, impl="pallas"),
        contract_case=(1, 2, 20, 2, 8, 6),
        packed_reference=decay_reference,
        chunk_cases=(
            chunk_case(1, 64, 24, 40, True), chunk_case(63, 16, 24, 40, False),
            chunk_case(75, 32, 16, 16, True), chunk_case(300, 64, 24, 40, True),
            chunk_case(300, 16, 32, 24, False),
        ),
        bf16_cases=(Case("c32", functools.partial(make, 7, 2, 75, 2, 24, 40), 32),),
        packed_cases=tuple(
            Case(f"c{c}", functools.partial(make, 3, 2, 75, 2, 24, 40), c, segment_ids=PACKED_75)
            for c in (16, 64)
        ),
        long_cases=(long_case(jnp.float32), long_case(jnp.bfloat16)),
        kernel_cases=(Case("T37-c16", functools.partial(make, 6, 2, 37, 2, 16, 24), 16),),
    )  # fmt: skip


KERNEL_WEAK, KERNEL_STRONG = (5e-4, 2e-3), (3.0, 8.0)  # ranges of −g: ≈ −1e-3 and ≈ −5


def _delta_row(gated: bool) -> OpSpec:
    """The gated delta rule (g, β) or the delta rule (β)."""

    def inputs(*sizes, **kw) -> Callable[[], Inputs]:
        return functools.partial(delta_case_inputs, *sizes, gated=gated, **kw)

    def chunk_case(t, chunk, dk, dv, init, beta_max, key_corr, impl, gate=(1e-4, 10.0)) -> Case:
        kw = dict(
            init=init, beta_max=beta_max, key_corr=key_corr, **({"gate": gate} if gated else {})
        )
        cid = f"T{t}-c{chunk}-beta{beta_max}-corr{key_corr}-{impl}" + ("" if init else "-no_s0")
        if gated:
            cid += f"-gate{gate[0]}:{gate[1]}"
        return Case(cid, inputs(0, 2, t, 2, dk, dv, **kw), chunk, impl)

    def kernel_case(t, chunk, gate, init) -> Case:
        cid = f"T{t}-c{chunk}" + (f"-gate{gate[0]}:{gate[1]}" if gated else "")
        cid += "" if init else "-no_s0"
        kw = dict(gate=gate, beta_max=2.0, init=init)
        return Case(cid, inputs(0, 2, t, 2, 16, 24, **kw), chunk)

    def long_case(dtype) -> Case:
        def make() -> Inputs:
            x = delta_case_inputs(
                8, 1, 16384, 1, 16, 16, gated=gated, beta_max=2.0, unit_cotangents=True
            )
            if gated:  # strongest decay over half the sequence
                x = with_gate_span(x, 8192, None, -10.0)
            return cast(x, ("q", "k", "v", "beta"), dtype)

        return Case(jnp.dtype(dtype).name, make, impl="auto")

    if gated:
        chunk_cases = (
            chunk_case(1, 64, 16, 16, True, 1.0, 0.0, "chunk"),
            chunk_case(63, 16, 24, 40, False, 2.0, 0.0, "chunk"),
            chunk_case(75, 32, 24, 40, True, 1.0, 0.0, "auto", gate=(1.0, 10.0)),  # strong decay
            # slow decay; β near 2 with near-parallel keys (the WY solve at its least accurate)
            chunk_case(300, 64, 24, 40, True, 2.0, 10.0, "chunk", gate=(1e-4, 1e-2)),
        )
        packed = ((3, 1.0, 16), (4, 2.0, 16))  # (seed, beta_max, chunk)
        kernel_cases = (
            kernel_case(37, 16, KERNEL_WEAK, True),
            kernel_case(100, 32, KERNEL_STRONG, False),
            kernel_case(1, 16, KERNEL_STRONG, True),
        )
    else:
        chunk_cases = (
            chunk_case(1, 16, 24, 40, True, 2.0, 0.0, "chunk"),
            chunk_case(63, 64, 24, 40, True, 1.0, 0.0, "auto"),
            chunk_case(75, 16, 16, 24, False, 2.0, 10.0, "chunk"),  # β near 2, near-parallel keys
            chunk_case(300, 32, 24, 40, True, 1.0, 0.0, "chunk"),
        )
        packed = ((3, 2.0, 16), (4, 1.0, 32))
        kernel_cases = (
            kernel_case(37, 32, KERNEL_WEAK, True),
            kernel_case(100, 16, KERNEL_WEAK, False),
        )
    return OpSpec(
        "gated_delta_rule" if gated else "delta_rule",
        gated_delta_rule if gated else delta_rule,
        gated_delta_rule_step if gated else delta_rule_step,
        ("g", "beta") if gated else ("beta",),
        lambda c: delta_case_inputs(*c, gated=gated, beta_max=2.0),
        step_case=(5, 2, 7, 2, 8, 12),
        ungated=delta_rule if gated else None,
        zero_gate_case=(7, 2, 75, 2, 24, 40) if gated else None,
        low_precision=("q", "k", "v", "beta"),
        kernel=functools.partial(gated_delta_rule if gated else delta_rule, impl="pallas"),
        contract_case=(6, 2, 1, 3, 8, 12),
        chunk_cases=chunk_cases,
        bf16_cases=(Case("beta2", inputs(1, 2, 75, 2, 24, 40, beta_max=2.0), 32 if gated else 64),),
        packed_cases=tuple(
            Case(
                f"seed{s}-beta{m}-c{c}", inputs(s, 2, 64, 2, 16, 24, beta_max=m), c,
                segment_ids=PACKED_64,
            )
            for s, m, c in packed
        ),
        long_cases=(long_case(jnp.float32), *([long_case(jnp.bfloat16)] if gated else [])),
        kernel_cases=kernel_cases,
        kernel_bf16_cases=(
            (Case("strong", inputs(3, 2, 37, 2, 16, 24, gate=KERNEL_STRONG, beta_max=2.0), 16),)
            if gated else ()
        ),
    )  # fmt: skip


SPECS = [
    _gla_row(per_channel=True),
    _gla_row(per_channel=False),
    _linear_attention_row(),
    _delta_row(gated=True),
    _delta_row(gated=False),
]
