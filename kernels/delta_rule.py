"""Pallas kernels for the chunked (gated) delta rule in the WY/UT form, forward and backward.

Same semantics as :func:`memarch.ops.gated_delta_rule.gated_delta_rule` (``impl="chunk"``):
per head, key-major fp32 state ``S ∈ R^{K×V}``, log decay ``g_t`` (None or zeros: the plain
delta rule), write strength ``β_t``; q and k are used as given (callers L2-normalise them)::

    S_t = exp(g_t) S_{t-1} + β_t k_t (v_t − exp(g_t) S_{t-1}ᵀ k_t)ᵀ,     o_t = s · S_tᵀ q_t

Per chunk of C tokens entering with ``S = S_[n]`` (γ = chunk-local inclusive cumsum of g,
``Γ_ij = exp(γ_i − γ_j)`` for j ≤ i, masked before the exp, else 0)::

    L  = strictly-lower(diag(β)(KKᵀ ⊙ Γ));    A = (I + L)⁻¹
    W  = A diag(β ⊙ exp(γ)) K;    U = A diag(β) V;    Ṽ = U − W S
    O  = s[(Q ⊙ exp(γ)) S + (QKᵀ ⊙ Γ) Ṽ]
    S_[n+1] = exp(γ_C) S + (K ⊙ exp(γ_C − γ))ᵀ Ṽ

``A`` is built in the kernel by column-oriented forward substitution (a ``fori_loop`` over the
C columns: once row j of A is final, ``A −= L[:, j] A[j, :]``), with masked reductions instead of
dynamic slices, so the same body lowers through Mosaic TPU and Triton. The backward pass is the
hand-written VJP of the chunk above (``dX = Aᵀ d(AR)``, ``dL = −strictly-lower(dR Xᵀ)``) and
carries ``dS`` over the chunks in reverse; ``dg`` is the reverse cumsum of ``dγ`` (by autodiff of
the host-side cumsum). The forward pass used under differentiation stores the chunk-entry states
``[B, H, N·K, V]`` fp32 for the backward pass.

Schedules (both share the per-chunk math; :func:`_pick_schedule` picks by the platform the
kernels are compiled for, see :mod:`memarch.kernels._target`):

* ``"grid"`` — TPU and the interpreters: grid ``(B, H, N)``, chunk axis last and
  ``"arbitrary"``, the state (or dS) carried in a ``pltpu.VMEM`` scratch, one chunk per step.
* ``"loop"`` — GPU (the Triton lowering has no scratch memory and runs grid steps in parallel):
  grid ``(B, H)``, the chunk loop is a ``fori_loop`` inside the kernel, the state a loop carry.

Host-side glue (XLA): ``[B, T, H, ·]`` → ``[B, H, T, ·]`` transposes, padding T up to a multiple
of C with identity steps (g = 0, β = 0, q = k = v = 0), padding K and V up to a power of two
≥ 16 with zeros (Triton's dot and load shapes; a no-op for the usual 64/128/256), the cumsum of g.
All arithmetic inside the kernels is fp32 with ``precision=HIGHEST`` matmuls; q, k, v keep their
dtype in HBM and are upcast on load.

``segment_ids`` (packed sequences) is not handled here: the ops fall back to the XLA chunk form
when it is given.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from memarch.kernels import _checks, _platform
from memarch.kernels._sharding import shard_batch_heads

Schedule = Literal["grid", "loop"]
SCHEDULES = ("grid", "loop")
F32 = jnp.float32
HIGHEST = jax.lax.Precision.HIGHEST
MIN_CHUNK = 16  # Triton's smallest dot dimension


# ----------------------------------------------------------------------------------------------
# Per-chunk math on values (shared by every kernel body).


def _dot(a: jax.Array, b: jax.Array, ca: int, cb: int) -> jax.Array:
    dims = (((ca,), (cb,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=HIGHEST, preferred_element_type=F32)


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a b``."""
    return _dot(a, b, 1, 0)


def _mm_nt(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a bᵀ``."""
    return _dot(a, b, 1, 1)


def _mm_tn(a: jax.Array, b: jax.Array) -> jax.Array:
    """``aᵀ b``."""
    return _dot(a, b, 0, 0)


def _iota(shape: tuple[int, int], axis: int) -> jax.Array:
    return jax.lax.broadcasted_iota(jnp.int32, shape, axis)


def _sum_all(x: jax.Array) -> jax.Array:
    """Sum of a 2-D value as ``[1, 1]`` (no rank-0 values in the kernels)."""
    return jnp.sum(jnp.sum(x, axis=1, keepdims=True), axis=0, keepdims=True)


def _unit_lower_inverse(lower: jax.Array, row: jax.Array, col: jax.Array) -> jax.Array:
    """``(I + L)⁻¹`` of a strictly lower ``[C, C]`` L by column-oriented forward substitution.

    Row j of the inverse is final once columns < j are eliminated; then ``A −= L[:, j] A[j, :]``
    (an outer product). Exact fp32 substitution, as accurate as a triangular solve.
    """
    c = lower.shape[0]
    eye = jnp.where(row == col, 1.0, 0.0).astype(F32)

    def body(j, a):
        l_col = jnp.sum(jnp.where(col == j, lower, 0.0), axis=1, keepdims=True)  # L[:, j]
        a_row = jnp.sum(jnp.where(row == j, a, 0.0), axis=0, keepdims=True)  # A[j, :]
        return a - l_col * a_row

    return jax.lax.fori_loop(0, c - 1, body, eye)


def _chunk_setup(q, k, v, beta, gcol, grow):
    """The state-independent pieces of one chunk (recomputed in the backward pass)."""
    c = q.shape[0]
    row, col = _iota((c, c), 0), _iota((c, c), 1)
    causal = col <= row
    gamma = jnp.where(causal, jnp.exp(jnp.where(causal, gcol - grow, 0.0)), 0.0)  # Γ ⊙ M
    kk = _mm_nt(k, k)
    lower = jnp.where(col < row, beta * kk * gamma, 0.0)
    a = _unit_lower_inverse(lower, row, col)
    eg = jnp.exp(gcol)  # [C, 1]
    last = _iota((c, 1), 0) == c - 1
    g_last = jnp.sum(jnp.where(last, gcol, 0.0), axis=0, keepdims=True)  # γ_C as [1, 1]
    w = _mm(a, (beta * eg) * k)
    u = _mm(a, beta * v)
    return dict(
        row=row, col=col, gamma=gamma, kk=kk, a=a, eg=eg, last=last, g_last=g_last, w=w, u=u
    )


def _chunk_forward(q, k, v, beta, gcol, grow, s, scale: float):
    """One chunk: q, k ``[C, K]``, v ``[C, V]``, beta, gcol ``[C, 1]``, grow ``[1, C]``,
    s ``[K, V]`` (all fp32) → (o ``[C, V]``, next state ``[K, V]``)."""
    p = _chunk_setup(q, k, v, beta, gcol, grow)
    v_new = p["u"] - _mm(p["w"], s)
    o = scale * (_mm(q * p["eg"], s) + _mm(_mm_nt(q, k) * p["gamma"], v_new))
    s_next = jnp.exp(p["g_last"]) * s + _mm_tn(k * jnp.exp(p["g_last"] - gcol), v_new)
    return o, s_next


def _chunk_backward(q, k, v, beta, gcol, grow, s, d_o, ds_next, scale: float):
    """VJP of :func:`_chunk_forward` given dO ``[C, V]`` and dS_[n+1] ``[K, V]``.

    Returns (dq, dk ``[C, K]``, dv ``[C, V]``, dβ, dγ ``[C, 1]``, dS_[n] ``[K, V]``).
    """
    p = _chunk_setup(q, k, v, beta, gcol, grow)
    gamma, kk, a, eg, w, u = p["gamma"], p["kk"], p["a"], p["eg"], p["w"], p["u"]
    row, col = p["row"], p["col"]
    v_new = u - _mm(w, s)
    qk = _mm_nt(q, k)
    decay = jnp.exp(p["g_last"])  # [1, 1]
    r = jnp.exp(p["g_last"] - gcol)  # [C, 1]

    # O = s[(Q ⊙ eγ) S + (QKᵀ ⊙ Γ) Ṽ];  S' = exp(γ_C) S + (K ⊙ r)ᵀ Ṽ;  Ṽ = U − W S
    dv_new = scale * _mm_tn(qk * gamma, d_o) + _mm(k * r, ds_next)
    ds_prev = scale * _mm_tn(q * eg, d_o) + decay * ds_next - _mm_tn(w, dv_new)
    dqk = scale * _mm_nt(d_o, v_new) * gamma  # d(QKᵀ) through the masked decay
    d_qe = scale * _mm_nt(d_o, s)  # d(Q ⊙ eγ)
    dq = _mm(dqk, k) + eg * d_qe
    dk = _mm_tn(dqk, q)
    d_gamma = dqk * qk  # dΓ ⊙ Γ, accumulated below
    dg = eg * jnp.sum(q * d_qe, axis=1, keepdims=True)
    d_kr = _mm_nt(v_new, ds_next)  # d(K ⊙ r)
    dk = dk + r * d_kr
    d_r = r * jnp.sum(k * d_kr, axis=1, keepdims=True)
    dg = dg - d_r
    d_glast = _sum_all(d_r) + decay * _sum_all(s * ds_next)

    # W = A (β eγ K), U = A (β V):  dR = Aᵀ dX,  dL = −strictly-lower(dR_w Wᵀ + dR_u Uᵀ)
    dkb = _mm_tn(a, -_mm_nt(dv_new, s))
    dvb = _mm_tn(a, dv_new)
    d_lower = jnp.where(col < row, -(_mm_nt(dkb, w) + _mm_nt(dvb, u)), 0.0)
    dk = dk + (beta * eg) * dkb
    d_be = eg * jnp.sum(k * dkb, axis=1, keepdims=True)  # d(β eγ) · eγ
    dbeta = d_be + jnp.sum(v * dvb, axis=1, keepdims=True)
    dg = dg + beta * d_be
    dv = beta * dvb

    # L = β (KKᵀ ⊙ Γ) strictly lower
    dbeta = dbeta + jnp.sum(d_lower * kk * gamma, axis=1, keepdims=True)
    dkk = d_lower * beta * gamma
    dk = dk + _mm(dkk + dkk.T, k)
    d_gamma = d_gamma + d_lower * beta * kk * gamma
    # Γ_ij = exp(γ_i − γ_j): dγ_i += Σ_j dΓ_ij Γ_ij, dγ_j −= Σ_i dΓ_ij Γ_ij
    dg = dg + jnp.sum(d_gamma, axis=1, keepdims=True) - jnp.sum(d_gamma.T, axis=1, keepdims=True)
    dg = dg + jnp.where(p["last"], d_glast, 0.0)
    return dq, dk, dv, dbeta, dg, ds_prev


# ----------------------------------------------------------------------------------------------
# Kernel bodies. Refs: q, k [·, K]; v [·, V]; beta, gcol [·, 1]; grow [1, C] (grid) or
# [N, C] (loop); states [·, V] with K rows per chunk.


def _load(ref, idx=...):
    return ref[idx].astype(F32)


def _fwd_grid_kernel(*refs, scale: float, n_chunks: int, save_states: bool):
    q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref, s0_ref, o_ref, sf_ref, *rest = refs
    st_ref = rest[0] if save_states else None
    s_scr = rest[-1]
    n = pl.program_id(2)

    @pl.when(n == 0)
    def _():
        s_scr[...] = s0_ref[...]

    s = s_scr[...]
    if st_ref is not None:
        st_ref[...] = s
    xs = (_load(r) for r in (q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref))
    o, s_next = _chunk_forward(*xs, s, scale)
    o_ref[...] = o
    s_scr[...] = s_next

    @pl.when(n == n_chunks - 1)
    def _():
        sf_ref[...] = s_next


def _fwd_loop_kernel(*refs, scale: float, n_chunks: int, chunk: int, save_states: bool):
    q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref, s0_ref, o_ref, sf_ref, *rest = refs
    st_ref = rest[0] if save_states else None
    dk = q_ref.shape[-1]

    def body(n, s):
        rows = pl.ds(pl.multiple_of(n * chunk, chunk), chunk)
        if st_ref is not None:
            st_ref[pl.ds(pl.multiple_of(n * dk, dk), dk), :] = s
        xs = (_load(r, (rows, slice(None))) for r in (q_ref, k_ref, v_ref, b_ref, gc_ref))
        o, s_next = _chunk_forward(*xs, _load(gr_ref, (pl.ds(n, 1), slice(None))), s, scale)
        o_ref[rows, :] = o
        return s_next

    sf_ref[...] = jax.lax.fori_loop(0, n_chunks, body, s0_ref[...])


def _bwd_grid_kernel(*refs, scale: float, n_chunks: int):
    (q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref, st_ref, do_ref, dsf_ref) = refs[:9]
    dq_ref, dk_ref, dv_ref, db_ref, dg_ref, ds0_ref, ds_scr = refs[9:]
    i = pl.program_id(2)  # chunk n_chunks − 1 − i (the index maps run the chunks in reverse)

    @pl.when(i == 0)
    def _():
        ds_scr[...] = dsf_ref[...]

    xs = (_load(r) for r in (q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref))
    grads = _chunk_backward(*xs, st_ref[...], _load(do_ref), ds_scr[...], scale)
    for ref, x in zip((dq_ref, dk_ref, dv_ref, db_ref, dg_ref), grads[:5], strict=True):
        ref[...] = x
    ds_scr[...] = grads[5]

    @pl.when(i == n_chunks - 1)
    def _():
        ds0_ref[...] = grads[5]


def _bwd_loop_kernel(*refs, scale: float, n_chunks: int, chunk: int):
    (q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref, st_ref, do_ref, dsf_ref) = refs[:9]
    dq_ref, dk_ref, dv_ref, db_ref, dg_ref, ds0_ref = refs[9:]
    dk = q_ref.shape[-1]

    def body(j, ds):
        n = n_chunks - 1 - j
        rows = (pl.ds(pl.multiple_of(n * chunk, chunk), chunk), slice(None))
        xs = (_load(r, rows) for r in (q_ref, k_ref, v_ref, b_ref, gc_ref))
        s = st_ref[pl.ds(pl.multiple_of(n * dk, dk), dk), :]
        gr = _load(gr_ref, (pl.ds(n, 1), slice(None)))
        grads = _chunk_backward(*xs, gr, s, _load(do_ref, rows), ds, scale)
        for ref, x in zip((dq_ref, dk_ref, dv_ref, db_ref, dg_ref), grads[:5], strict=True):
            ref[rows] = x
        return grads[5]

    ds0_ref[...] = jax.lax.fori_loop(0, n_chunks, body, dsf_ref[...])


# ----------------------------------------------------------------------------------------------
# pallas_call wrappers on the kernel layout: q, k [B, H, Tp, Kp]; v [B, H, Tp, Vp]; beta, gam
# [B, H, Tp] fp32; states [B, H, Kp, Vp] fp32.


def _pick_schedule(schedule: Schedule | None, platform: str) -> Schedule:
    """The schedule asked for, or by target ``platform``: ``"loop"`` on GPU, else ``"grid"``."""
    if schedule is None:
        return "loop" if platform == "gpu" else "grid"
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)} or None; got {schedule!r}")
    return schedule


def _specs(schedule: Schedule, n: int, chunk: int, reverse: bool = False):
    """BlockSpec factories (token rows, gate rows, per-(b, h) state, per-chunk state)."""
    if schedule == "grid":

        def c(i):
            return n - 1 - i if reverse else i

        return (
            lambda d: pl.BlockSpec((None, None, chunk, d), lambda b, h, i: (b, h, c(i), 0)),
            pl.BlockSpec((None, None, None, 1, chunk), lambda b, h, i: (b, h, c(i), 0, 0)),
            lambda kp, vp: pl.BlockSpec((None, None, kp, vp), lambda b, h, i: (b, h, 0, 0)),
            lambda kp, vp: pl.BlockSpec((None, None, kp, vp), lambda b, h, i: (b, h, c(i), 0)),
        )

    def whole(rows, d):
        return pl.BlockSpec((None, None, rows, d), lambda b, h: (b, h, 0, 0))

    return (
        lambda d: whole(n * chunk, d),
        whole(n, chunk),
        whole,
        lambda kp, vp: whole(n * kp, vp),
    )


def _grid_args(schedule: Schedule, shape: tuple[int, ...], n: int, platform: str):
    """Grid and compiler params for target ``platform``: the chunk axis (grid schedule) carries
    state: "arbitrary"."""
    b, h = shape[:2]
    if schedule == "grid":
        semantics = ("parallel", "parallel", "arbitrary")
        return (b, h, n), _platform.compiler_params(semantics, platform=platform)
    return (b, h), _platform.compiler_params(("parallel", "parallel"), platform=platform)


def _gate_layout(beta, gam, schedule: Schedule, n: int, chunk: int):
    b, h, _ = gam.shape
    grow = gam.reshape(b, h, n, 1, chunk) if schedule == "grid" else gam.reshape(b, h, n, chunk)
    return beta[..., None], gam[..., None], grow


def _forward_call(
    q, k, v, beta, gam, s0, *, scale, chunk, interpret, schedule, platform, save_states
):
    b, h, tp, kp = q.shape
    vp = v.shape[-1]
    n = tp // chunk
    tok, row_spec, state_spec, chunk_state_spec = _specs(schedule, n, chunk)
    grid, params = _grid_args(schedule, q.shape, n, platform)
    out_shape = [
        jax.ShapeDtypeStruct((b, h, tp, vp), F32),
        jax.ShapeDtypeStruct((b, h, kp, vp), F32),
    ]
    out_specs = [tok(vp), state_spec(kp, vp)]
    if save_states:
        out_shape.append(jax.ShapeDtypeStruct((b, h, n * kp, vp), F32))
        out_specs.append(chunk_state_spec(kp, vp))
    if schedule == "grid":
        body = functools.partial(_fwd_grid_kernel, n_chunks=n)
        scratch = [pltpu.VMEM((kp, vp), F32)]
    else:
        body = functools.partial(_fwd_loop_kernel, n_chunks=n, chunk=chunk)
        scratch = []
    outs = pl.pallas_call(
        functools.partial(body, scale=scale, save_states=save_states),
        out_shape=out_shape,
        grid=grid,
        in_specs=[tok(kp), tok(kp), tok(vp), tok(1), tok(1), row_spec, state_spec(kp, vp)],
        out_specs=out_specs,
        scratch_shapes=scratch,
        interpret=_platform.resolve_interpret(interpret, platform),
        compiler_params=params,
        name="gated_delta_rule_fwd",
    )(q, k, v, *_gate_layout(beta, gam, schedule, n, chunk), s0)
    return outs if save_states else (*outs, None)


def _backward_call(
    q, k, v, beta, gam, states, d_o, d_sf, *, scale, chunk, interpret, schedule, platform
):
    b, h, tp, kp = q.shape
    vp = v.shape[-1]
    n = tp // chunk
    tok, row_spec, state_spec, chunk_state_spec = _specs(schedule, n, chunk, reverse=True)
    grid, params = _grid_args(schedule, q.shape, n, platform)
    if schedule == "grid":
        body = functools.partial(_bwd_grid_kernel, n_chunks=n)
        scratch = [pltpu.VMEM((kp, vp), F32)]
    else:
        body = functools.partial(_bwd_loop_kernel, n_chunks=n, chunk=chunk)
        scratch = []
    in_specs = [tok(kp), tok(kp), tok(vp), tok(1), tok(1), row_spec, chunk_state_spec(kp, vp)]
    in_specs += [tok(vp), state_spec(kp, vp)]
    shapes = [(b, h, tp, kp), (b, h, tp, kp), (b, h, tp, vp), (b, h, tp, 1), (b, h, tp, 1)]
    return pl.pallas_call(
        functools.partial(body, scale=scale),
        out_shape=[jax.ShapeDtypeStruct(s, F32) for s in (*shapes, (b, h, kp, vp))],
        grid=grid,
        in_specs=in_specs,
        out_specs=[tok(kp), tok(kp), tok(vp), tok(1), tok(1), state_spec(kp, vp)],
        scratch_shapes=scratch,
        interpret=_platform.resolve_interpret(interpret, platform),
        compiler_params=params,
        name="gated_delta_rule_bwd",
    )(q, k, v, *_gate_layout(beta, gam, schedule, n, chunk), states, d_o, d_sf)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9, 10))
def _delta_core(q, k, v, beta, gam, s0, scale, chunk, interpret, schedule, platform):
    """(o ``[B, H, Tp, Vp]`` fp32, final state ``[B, H, Kp, Vp]``) on the kernel layout;
    ``platform`` is the target the entry resolved (kernels/_platform.py)."""
    o, sf, _ = _forward_call(
        q, k, v, beta, gam, s0, scale=scale, chunk=chunk, interpret=interpret,
        schedule=schedule, platform=platform, save_states=False,
    )  # fmt: skip
    return o, sf


def _delta_core_fwd(q, k, v, beta, gam, s0, scale, chunk, interpret, schedule, platform):
    o, sf, states = _forward_call(
        q, k, v, beta, gam, s0, scale=scale, chunk=chunk, interpret=interpret,
        schedule=schedule, platform=platform, save_states=True,
    )  # fmt: skip
    return (o, sf), (q, k, v, beta, gam, states)


def _delta_core_bwd(scale, chunk, interpret, schedule, platform, res, cts):
    q, k, v, beta, gam, states = res
    d_o, d_sf = cts
    dq, dk, dv, dbeta, dgam, ds0 = _backward_call(
        q, k, v, beta, gam, states, d_o, d_sf, scale=scale, chunk=chunk, interpret=interpret,
        schedule=schedule, platform=platform,
    )  # fmt: skip
    return (
        dq.astype(q.dtype),
        dk.astype(k.dtype),
        dv.astype(v.dtype),
        dbeta[..., 0],
        dgam[..., 0],
        ds0,
    )


_delta_core.defvjp(_delta_core_fwd, _delta_core_bwd)


# ----------------------------------------------------------------------------------------------
# Public entry point.


def _padded_dim(d: int) -> int:
    """The next power of two ≥ 16 (Triton's load and dot shapes)."""
    return max(MIN_CHUNK, 1 << (d - 1).bit_length())


CHUNK_RULE = f"a power of two ≥ {MIN_CHUNK}"  # the chunk sizes the kernels take, in words


PACKS_SEGMENTS = False  # no segment_ids: the ops fall back to their XLA chunk form


def supports_chunk_size(chunk_size: int) -> bool:
    """Whether the kernels take this chunk size (a power of two ≥ 16)."""
    return chunk_size >= MIN_CHUNK and not chunk_size & (chunk_size - 1)


def gated_delta_rule_pallas(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    g: jax.Array | None = None,
    *,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    interpret: _platform.Interpret = None,
    schedule: Schedule | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Chunked (gated) delta rule as Pallas kernels; differentiable (``jax.custom_vjp``).

    q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; beta ``[B, T, H]``; g ``[B, T, H]`` log decay
    (None: the plain delta rule); initial_state ``[B, H, K, V]``. Returns (o ``[B, T, H, V]`` in
    q's dtype, final state ``[B, H, K, V]`` fp32 or None). ``scale`` defaults to K^{-1/2};
    ``chunk_size`` must be a power of two ≥ 16 (T need not be a multiple of it).
    ``interpret``: see :mod:`memarch.kernels._platform` (None: compiled for a GPU/TPU target,
    interpreted for a CPU one). ``schedule``: ``"grid"`` (chunk axis in the grid, TPU) or
    ``"loop"`` (chunk loop inside the kernel, GPU); None picks by the target platform — an
    explicit ``compile_target``, the current mesh's device, q's sharding, else JAX's default
    backend (:mod:`memarch.kernels._target`).
    """
    _checks.check_chunk_size(chunk_size, supports_chunk_size, CHUNK_RULE)
    bsz, t, h, dk, dv = _checks.check_qkv(q, k, v)
    _checks.check_beta(beta, q)
    if g is not None:
        _checks.check_gate("g", g, q, per_channel_ok=False)
    _checks.check_state(initial_state, q, v)
    platform = _platform.backend(q)  # the target, resolved once for forward and backward
    _platform.resolve_interpret(interpret, platform)  # validates
    schedule = _pick_schedule(schedule, platform)
    s = _checks.resolve_scale(scale, dk)

    c = chunk_size
    n = -(-t // c)
    tp, kp, vp = n * c, _padded_dim(dk), _padded_dim(dv)

    def layout(x: jax.Array, d: int | None) -> jax.Array:  # [B, T, H(, D)] → [B, H, Tp(, Dp)]
        x = jnp.swapaxes(x, 1, 2)
        pads = [(0, 0), (0, 0), (0, tp - t)]
        if d is not None:
            pads.append((0, d - x.shape[-1]))
        return jnp.pad(x, pads)

    beta_l = layout(beta.astype(F32), None)
    if g is None:
        gam = jnp.zeros((bsz, h, tp), F32)
    else:  # γ: chunk-local inclusive cumsum (its autodiff gives dg = reverse cumsum of dγ)
        gam = jnp.cumsum(layout(g.astype(F32), None).reshape(bsz, h, n, c), axis=-1)
        gam = gam.reshape(bsz, h, tp)
    if initial_state is None:
        s0 = jnp.zeros((bsz, h, kp, vp), F32)
    else:
        s0 = jnp.pad(initial_state.astype(F32), [(0, 0), (0, 0), (0, kp - dk), (0, vp - dv)])
    core = lambda *xs: _delta_core(*xs, s, c, interpret, schedule, platform)
    o, sf = shard_batch_heads(
        core, layout(q, kp), layout(k, kp), layout(v, vp), beta_l, gam, s0
    )  # per (batch, head) shard under jax.set_mesh; direct call otherwise
    o = jnp.swapaxes(o[:, :, :t, :dv], 1, 2).astype(q.dtype)
    return o, (sf[:, :, :dk, :dv] if output_final_state else None)
