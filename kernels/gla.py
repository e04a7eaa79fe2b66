"""Pallas kernels for chunked gated linear attention (GLA), forward and backward.

Per batch row and head, with key-major state ``S_t ∈ R^{K×V}`` and log decay ``g_t ≤ 0``
(per key channel ``[B, T, H, K]`` or per head ``[B, T, H]``)::

    S_t = Diag(exp(g_t)) S_{t-1} + k_t v_tᵀ            o_t = scale · S_tᵀ q_t

:func:`gla_pallas` computes the same function as :func:`memarch.ops.gla` (``impl="naive"``)
with the chunked form of ``memarch.ops._chunk_decay`` (docs/linear_attention.md §Chunked form).
Within a chunk of ``C`` tokens, with ``b`` the chunk-local inclusive cumsum of ``g``, ``b_C`` its
last row, ``Q̃ = scale·Q`` and ``W = S_[n]ᵀ ∈ R^{V×K}`` the state entering chunk ``n``::

    O       = (Q̃ ⊙ exp(b)) Wᵀ + A V,        A_ij = Σ_d q̃_id k_jd exp(b_id − b_jd),  j ≤ i
    W_[n+1] = W ⊙ exp(b_C) + Vᵀ (K ⊙ exp(b_C − b))

Inside the kernels the state is kept value-major (``W = Sᵀ``, ``[V, K]``), so the decay
``exp(b_C)`` scales lanes and no in-kernel transpose is needed. Every exponent is ≤ 0:

* scalar gate: ``A = (Q̃ Kᵀ) ⊙ Γ``, ``Γ_ij = exp(b_i − b_j)`` for j ≤ i, masked before the exp;
* per-channel gate: ``A`` is built like ``_chunk_decay._tree_scores``, but with full-width masks
  instead of reshapes: at level ``h = 1, 2, 4, …, C/2`` every 2h-row block pairs its later half
  (queries, rows ``i``) with its earlier half (keys, rows ``j``) through the first row ``r`` of
  the later half, ``(Q̃ ⊙ exp(b − b_r))(K ⊙ exp(b_r − b))ᵀ``; the diagonal is ``q̃_i·k_i``.
  Each pair j < i is covered at exactly one level (the highest bit where i and j differ). All
  in-kernel work is 2-D matmuls (float32, ``Precision.HIGHEST``), iota masks and row sums.

Backward. One reverse pass over chunks carrying ``dW = ∂L/∂W_[n+1]`` recomputes each chunk
from the chunk-start state the forward saved and gives dq, dk, dv, dg and dS_0. The gate
gradient uses the identity (b depends on g only through the chunk-local cumsum, A on b only
through differences, and ``b_C`` scales the outgoing state)::

    dg_t = Σ_{u ≥ t, u in chunk} (q_u ⊙ dq_u − k_u ⊙ dk_u) + Σ_v (W_[n+1] ⊙ dW_[n+1])[v, :]

with the full dq, dk (summed over K as well for a per-head gate): a triangular matmul per chunk,
so no cancellation accumulates across chunks. The whole thing is a ``jax.custom_vjp``.

Schedules (``schedule``), both sharing the per-chunk math (:func:`_chunk_forward`,
:func:`_chunk_backward`); by default the platform the kernels are compiled for picks one (an
explicit ``compile_target``, the current mesh's device, the inputs' sharding, else JAX's
default backend: :mod:`memarch.kernels._target`):

* ``"grid"`` (TPU, and the default for interpret mode): one ``pallas_call`` over the grid
  ``(B, H, N)`` with the chunk axis last and ``"arbitrary"``; the state lives in a VMEM scratch
  buffer initialised under ``pl.when(n == 0)``. Mosaic TPU block specs: the last two block
  dims are full (K, V) or the chunk length (a multiple of 8).
* ``"loop"`` (GPU): the Triton lowering of ``pallas_call`` (see ``kernels/_platform.py``). A
  Triton grid runs its programs concurrently, so a state cannot be carried over a grid axis:
  the grid is ``(B, H)`` and each program loops over its chunks with ``lax.fori_loop``, the
  state a loop carry. Triton needs power-of-two array sizes ≥ 16 for dots: K and V are
  zero-padded to the next power of two (≥ 16), scalar gates are broadcast to K, and chunks are
  ≥ 16. Mosaic GPU (``plgpu.kernel``) is the non-deprecated Hopper path but needs a separate,
  warp-group kernel body; this schedule is the one that shares the math.

Verification so far: both schedules match the naive op in interpret mode; the "grid" kernels
(forward, forward with saved states, backward) compile with libtpu's compiler for TPU v5e and
v6e topologies from a CPU host (tests/kernels/test_kernel_compile.py), and the "loop" kernels
lower to Triton for an abstract H100. Neither has run on a device or been timed there, so check
them on a device before trusting ``impl="auto"``
(``memarch.ops._dispatch.AUTO_PALLAS_BACKENDS``).

Packed sequences (``segment_ids``) are not supported by the kernels; :func:`memarch.ops.gla`
falls back to the XLA chunk form when they are given.

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; g ``[B, T, H]`` or ``[B, T, H, K]``
(float, used in float32); state ``[B, H, K, V]`` float32; o ``[B, T, H, V]`` in q's dtype.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from memarch.kernels import _checks, _platform
from memarch.kernels._sharding import shard_batch_heads

F32 = jnp.float32
HIGHEST = lax.Precision.HIGHEST
MIN_CHUNK = {"grid": 8, "loop": 16}  # TPU sublane tile; Triton dots need dims ≥ 16
SCHEDULES = ("grid", "loop")
Schedule = Literal["grid", "loop"]


# ----------------------------------------------------------------------------- per-chunk math


def _mm(a: jax.Array, b: jax.Array, *, ta: bool = False, tb: bool = False) -> jax.Array:
    """``op(a) @ op(b)`` in float32 at HIGHEST precision; ``ta``/``tb`` transpose an operand."""
    dims = (((0,) if ta else (1,), (1,) if tb else (0,)), ((), ()))
    return lax.dot_general(a, b, dims, precision=HIGHEST, preferred_element_type=F32)


def _iotas(c: int) -> tuple[jax.Array, jax.Array]:
    """Row and column indices of a ``[C, C]`` matrix."""
    return lax.broadcasted_iota(jnp.int32, (c, c), 0), lax.broadcasted_iota(jnp.int32, (c, c), 1)


def _scalar_decay(g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-head gate ``g [C, 1]`` → (b ``[C, 1]``, Γ ``[C, C]``: ``exp(b_i − b_j)``, j ≤ i, else 0).

    ``b_i`` and ``b_j`` come as ``[C, C]`` matrices from two matmuls with triangular masks (no
    in-kernel transpose); the exponent is masked before the exp.
    """
    c = g.shape[0]
    rows, cols = _iotas(c)
    g_cols = jnp.broadcast_to(g, (c, c))  # [u, j] = g_u
    b_rows = _mm((cols <= rows).astype(F32), g_cols)  # [i, j] = b_i
    b_cols = _mm(jnp.ones((c, c), F32), jnp.where(rows <= cols, g_cols, 0.0))  # [i, j] = b_j
    causal = cols <= rows
    gamma = jnp.where(causal, jnp.exp(jnp.where(causal, b_rows - b_cols, 0.0)), 0.0)
    return jnp.max(b_rows, axis=1, keepdims=True), gamma


def _tree_levels(g: jax.Array, b: jax.Array):
    """Per-channel gate: yields, per tree level, (query factor, key factor, pair mask).

    ``g, b [C, K]``. At level ``s`` (half-block ``h = 2^s``), row ``i`` of a later half uses the
    reference row ``r(i) = first row of its half``: query factor ``exp(b_i − b_r)`` on later-half
    rows, key factor ``exp(b_r − b_j)`` on earlier-half rows (0 elsewhere), both exponents ≤ 0;
    the mask keeps pairs in the same 2h-row block. ``b_r`` per row is ``T_s @ g`` with
    ``T_s[i, u] = [u ≤ r(i)]``.
    """
    c = g.shape[0]
    rows, cols = _iotas(c)
    rvec = lax.broadcasted_iota(jnp.int32, (c, 1), 0)
    for s in range(c.bit_length() - 1):
        h, w = 1 << s, 2 << s
        ref = ((rows >> (s + 1)) << (s + 1)) + h  # r(i), for every row i
        d = b - _mm((cols <= ref).astype(F32), g)  # b_i − b_{r(i)}
        late = ((rvec & (w - 1)) >= h).astype(F32)  # [C, 1]
        early = 1.0 - late
        q_fac = jnp.exp(d * late) * late
        k_fac = jnp.exp(-d * early) * early
        pair = ((rows >> (s + 1)) == (cols >> (s + 1))) & ((rows & (w - 1)) >= h)
        pair = pair & ((cols & (w - 1)) < h)
        yield q_fac, k_fac, pair


def _tree_scores(qs, k, g, b, da=None):
    """Per-channel intra-chunk scores ``A [C, C]`` (j ≤ i) and, given ``da = ∂L/∂A``, the intra
    gradients (dq̃, dk) through A at fixed b. See :func:`_tree_levels`."""
    c = qs.shape[0]
    rows, cols = _iotas(c)
    eye = rows == cols
    a = jnp.where(eye, jnp.sum(qs * k, axis=1, keepdims=True), 0.0)
    if da is not None:
        d_diag = jnp.sum(jnp.where(eye, da, 0.0), axis=1, keepdims=True)
        dq, dk = d_diag * k, d_diag * qs
    for q_fac, k_fac, pair in _tree_levels(g, b):
        q_hat, k_hat = qs * q_fac, k * k_fac
        a = a + jnp.where(pair, _mm(q_hat, k_hat, tb=True), 0.0)
        if da is not None:
            d_pair = jnp.where(pair, da, 0.0)
            dq = dq + _mm(d_pair, k_hat) * q_fac
            dk = dk + _mm(d_pair, q_hat, ta=True) * k_fac
    return a if da is None else (a, dq, dk)


def _decays(g: jax.Array, per_channel: bool):
    """(b, Γ or None, b_C ``[1, Kg]``) for a gate chunk ``g [C, Kg]``."""
    if per_channel:
        rows, cols = _iotas(g.shape[0])
        b, gamma = _mm((cols <= rows).astype(F32), g), None
    else:
        b, gamma = _scalar_decay(g)
    return b, gamma, jnp.sum(g, axis=0, keepdims=True)


def _chunk_forward(q, k, v, g, w, *, scale: float, per_channel: bool):
    """One chunk: ``q, k [C, K]``, ``v [C, V]``, ``g [C, Kg]``, state ``w = Sᵀ [V, K]`` (all
    float32) → (o ``[C, V]``, next state ``[V, K]``)."""
    qs = q * scale
    b, gamma, b_last = _decays(g, per_channel)
    a = _tree_scores(qs, k, g, b) if per_channel else _mm(qs, k, tb=True) * gamma
    o = _mm(qs * jnp.exp(b), w, tb=True) + _mm(a, v)
    w_next = w * jnp.exp(b_last) + _mm(v, k * jnp.exp(b_last - b), ta=True)
    return o, w_next


def _chunk_backward(q, k, v, g, w, do, dw, *, scale: float, per_channel: bool):
    """Reverse step for one chunk. ``w`` is the state entering the chunk, ``dw = ∂L/∂W_[n+1]``
    (both ``[V, K]``), ``do [C, V]``. Returns (dq, dk ``[C, K]``, dv ``[C, V]``, dg ``[C, Kg]``,
    ∂L/∂W_[n])."""
    qs = q * scale
    b, gamma, b_last = _decays(g, per_channel)
    e_b, e_rest = jnp.exp(b), jnp.exp(b_last - b)
    q_dec, k_dec = qs * e_b, k * e_rest
    c = q.shape[0]
    rows, cols = _iotas(c)
    da = jnp.where(cols <= rows, _mm(do, v, tb=True), 0.0)  # ∂L/∂A on the causal triangle
    if per_channel:
        a, dq, dk = _tree_scores(qs, k, g, b, da)
    else:
        a = _mm(qs, k, tb=True) * gamma
        da_gamma = da * gamma
        dq, dk = _mm(da_gamma, k), _mm(da_gamma, qs, ta=True)
    dq = (dq + _mm(do, w) * e_b) * scale
    dk = dk + _mm(v, dw) * e_rest
    dv = _mm(a, do, ta=True) + _mm(k_dec, dw, tb=True)
    e_last = jnp.exp(b_last)
    dw_prev = dw * e_last + _mm(do, q_dec, ta=True)
    # dg: chunk-local reverse cumsum of q⊙dq − k⊙dk, plus Σ_v W_[n+1] ⊙ dW_[n+1] on every row.
    w_next = w * e_last + _mm(v, k_dec, ta=True)
    tail = jnp.sum(w_next * dw, axis=0, keepdims=True)  # [1, K]
    dg = _mm((cols >= rows).astype(F32), q * dq - k * dk) + tail
    if not per_channel:
        dg = jnp.sum(dg, axis=1, keepdims=True)
    return dq, dk, dv, dg, dw_prev


# ----------------------------------------------------------------------------- kernel bodies


def _load(ref) -> jax.Array:
    return ref[...].astype(F32)


def _fwd_grid_kernel(
    q_ref, k_ref, v_ref, g_ref, s0_ref, o_ref, sT_ref, *rest, scale, per_channel, save
):
    """Grid (B, H, N), chunk axis last: one chunk per step, the state in VMEM scratch."""
    states_ref, w_ref = rest if save else (None, *rest)
    n = pl.program_id(2)

    @pl.when(n == 0)
    def _():
        w_ref[...] = s0_ref[...]

    w = w_ref[...]
    if save:
        states_ref[...] = w
    o, w_next = _chunk_forward(
        _load(q_ref), _load(k_ref), _load(v_ref), _load(g_ref), w,
        scale=scale, per_channel=per_channel,
    )  # fmt: skip
    o_ref[...] = o.astype(o_ref.dtype)
    w_ref[...] = w_next

    @pl.when(n == pl.num_programs(2) - 1)
    def _():
        sT_ref[...] = w_next


def _bwd_grid_kernel(
    q_ref, k_ref, v_ref, g_ref, states_ref, do_ref, dsT_ref,
    dq_ref, dk_ref, dv_ref, dg_ref, ds0_ref, dw_ref, *, scale, per_channel,
):  # fmt: skip
    """Grid (B, H, N) with chunks visited last to first; ∂L/∂W in VMEM scratch."""
    i = pl.program_id(2)

    @pl.when(i == 0)
    def _():
        dw_ref[...] = dsT_ref[...]

    dq, dk, dv, dg, dw_prev = _chunk_backward(
        _load(q_ref), _load(k_ref), _load(v_ref), _load(g_ref), states_ref[...],
        _load(do_ref), dw_ref[...], scale=scale, per_channel=per_channel,
    )  # fmt: skip
    dq_ref[...], dk_ref[...], dv_ref[...], dg_ref[...] = dq, dk, dv, dg
    dw_ref[...] = dw_prev

    @pl.when(i == pl.num_programs(2) - 1)
    def _():
        ds0_ref[...] = dw_prev


def _rows(ref, n, c):
    return ref[pl.ds(n * c, c), :].astype(F32)


def _fwd_loop_kernel(
    q_ref, k_ref, v_ref, g_ref, s0_ref, o_ref, sT_ref, *rest, scale, per_channel, save, c
):
    """Grid (B, H): each program loops over its chunks; the state is a loop carry."""
    states_ref = rest[0] if save else None
    n_chunks = q_ref.shape[0] // c
    dv = v_ref.shape[-1]

    def body(n, w):
        if save:
            states_ref[pl.ds(n * dv, dv), :] = w
        loads = (_rows(r, n, c) for r in (q_ref, k_ref, v_ref, g_ref))
        o, w_next = _chunk_forward(*loads, w, scale=scale, per_channel=per_channel)
        o_ref[pl.ds(n * c, c), :] = o.astype(o_ref.dtype)
        return w_next

    sT_ref[...] = lax.fori_loop(0, n_chunks, body, s0_ref[...].astype(F32))


def _bwd_loop_kernel(
    q_ref, k_ref, v_ref, g_ref, states_ref, do_ref, dsT_ref,
    dq_ref, dk_ref, dv_ref, dg_ref, ds0_ref, *, scale, per_channel, c,
):  # fmt: skip
    """Grid (B, H): each program loops over its chunks last to first, carrying ∂L/∂W."""
    n_chunks = q_ref.shape[0] // c
    dv = v_ref.shape[-1]

    def body(i, dw):
        n = n_chunks - 1 - i
        loads = [_rows(r, n, c) for r in (q_ref, k_ref, v_ref, g_ref)]
        w = states_ref[pl.ds(n * dv, dv), :]
        grads = _chunk_backward(
            *loads, w, _rows(do_ref, n, c), dw, scale=scale, per_channel=per_channel
        )
        for ref, grad in zip((dq_ref, dk_ref, dv_ref, dg_ref), grads[:4], strict=True):
            ref[pl.ds(n * c, c), :] = grad
        return grads[4]

    ds0_ref[...] = lax.fori_loop(0, n_chunks, body, dsT_ref[...].astype(F32))


# ----------------------------------------------------------------------------- pallas_calls


class _Config(NamedTuple):
    scale: float
    chunk: int
    per_channel: bool
    interpret: _platform.Interpret
    schedule: str
    platform: str  # the target platform, resolved once per call (kernels/_platform.py)


def _grid_specs(cfg: _Config, shapes, reverse: bool):
    """BlockSpecs over grid (B, H, N) for [B, H, T, D] arrays (one chunk) and [B, H, V, K]
    arrays (whole), with the chunk index reversed for the backward."""
    n_chunks = shapes[0][2] // cfg.chunk
    chunk_idx = (lambda n: n_chunks - 1 - n) if reverse else (lambda n: n)

    def per_chunk(d):
        return pl.BlockSpec((None, None, cfg.chunk, d), lambda b, h, n: (b, h, chunk_idx(n), 0))

    def whole(shape):
        return pl.BlockSpec((None, None, *shape), lambda b, h, n: (b, h, 0, 0))

    def per_chunk_state(shape):
        return pl.BlockSpec((None, None, None, *shape), lambda b, h, n: (b, h, chunk_idx(n), 0, 0))

    return per_chunk, whole, per_chunk_state, n_chunks


def _loop_spec(shape):
    return pl.BlockSpec((None, None, *shape), lambda b, h: (b, h, 0, 0))


def _call(kernel, cfg: _Config, grid, in_specs, out_specs, out_shape, scratch=(), *, name: str):
    semantics = ("parallel", "parallel", "arbitrary")[: len(grid)]
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        scratch_shapes=scratch,
        interpret=_platform.resolve_interpret(cfg.interpret, cfg.platform),
        compiler_params=_platform.compiler_params(semantics, platform=cfg.platform),
        name=name,  # the kernel's name in the compiled program: gla_fwd / gla_bwd
    )


def _forward(q, k, v, g, s0, cfg: _Config, save: bool):
    """Kernel layout: q, k ``[B, H, Tp, K]``, v ``[B, H, Tp, V]``, g ``[B, H, Tp, Kg]``, s0
    ``[B, H, V, K]``. Returns (o, S_Tᵀ, chunk-start states ``[B, H, N, V, K]`` or None)."""
    bsz, h, tp, dk = q.shape
    dv, kg = v.shape[-1], g.shape[-1]
    n = tp // cfg.chunk
    state = jax.ShapeDtypeStruct((bsz, h, dv, dk), F32)
    out_shape = [jax.ShapeDtypeStruct(v.shape, q.dtype), state]
    kw = dict(scale=cfg.scale, per_channel=cfg.per_channel, save=save)
    if save:
        out_shape.append(jax.ShapeDtypeStruct((bsz, h, n, dv, dk), F32))
    if cfg.schedule == "grid":
        per_chunk, whole, per_chunk_state, _ = _grid_specs(cfg, [q.shape], reverse=False)
        in_specs = [per_chunk(dk), per_chunk(dk), per_chunk(dv), per_chunk(kg), whole((dv, dk))]
        out_specs = [per_chunk(dv), whole((dv, dk))]
        if save:
            out_specs.append(per_chunk_state((dv, dk)))
        call = _call(
            functools.partial(_fwd_grid_kernel, **kw), cfg, (bsz, h, n), in_specs, out_specs,
            out_shape, scratch=[pltpu.VMEM((dv, dk), F32)], name="gla_fwd",
        )  # fmt: skip
        outs = call(q, k, v, g, s0)
    else:
        in_specs = [_loop_spec(x.shape[2:]) for x in (q, k, v, g, s0)]
        out_specs = [_loop_spec((tp, dv)), _loop_spec((dv, dk))]
        if save:
            out_shape[-1] = jax.ShapeDtypeStruct((bsz, h, n * dv, dk), F32)
            out_specs.append(_loop_spec((n * dv, dk)))
        kernel = functools.partial(_fwd_loop_kernel, c=cfg.chunk, **kw)
        call = _call(kernel, cfg, (bsz, h), in_specs, out_specs, out_shape, name="gla_fwd")
        outs = call(q, k, v, g, s0)
        if save:
            outs = (*outs[:2], outs[2].reshape(bsz, h, n, dv, dk))
    return outs[0], outs[1], (outs[2] if save else None)


def _backward(q, k, v, g, states, do, dsT, cfg: _Config):
    """Returns (dq, dk ``[B, H, Tp, K]``, dv ``[B, H, Tp, V]``, dg ``[B, H, Tp, Kg]``, dS_0ᵀ
    ``[B, H, V, K]``), all float32."""
    bsz, h, tp, dk = q.shape
    dv, kg = v.shape[-1], g.shape[-1]
    n = tp // cfg.chunk
    out_shape = [
        jax.ShapeDtypeStruct(q.shape, F32),
        jax.ShapeDtypeStruct(q.shape, F32),
        jax.ShapeDtypeStruct(v.shape, F32),
        jax.ShapeDtypeStruct(g.shape, F32),
        jax.ShapeDtypeStruct((bsz, h, dv, dk), F32),
    ]
    kw = dict(scale=cfg.scale, per_channel=cfg.per_channel)
    if cfg.schedule == "grid":
        per_chunk, whole, per_chunk_state, _ = _grid_specs(cfg, [q.shape], reverse=True)
        in_specs = [
            per_chunk(dk), per_chunk(dk), per_chunk(dv), per_chunk(kg),
            per_chunk_state((dv, dk)), per_chunk(dv), whole((dv, dk)),
        ]  # fmt: skip
        out_specs = [per_chunk(dk), per_chunk(dk), per_chunk(dv), per_chunk(kg), whole((dv, dk))]
        call = _call(
            functools.partial(_bwd_grid_kernel, **kw), cfg, (bsz, h, n), in_specs, out_specs,
            out_shape, scratch=[pltpu.VMEM((dv, dk), F32)], name="gla_bwd",
        )  # fmt: skip
        return call(q, k, v, g, states, do, dsT)
    states = states.reshape(bsz, h, n * dv, dk)
    in_specs = [_loop_spec(x.shape[2:]) for x in (q, k, v, g, states, do, dsT)]
    out_specs = [_loop_spec(s.shape[2:]) for s in out_shape]
    kernel = functools.partial(_bwd_loop_kernel, c=cfg.chunk, **kw)
    call = _call(kernel, cfg, (bsz, h), in_specs, out_specs, out_shape, name="gla_bwd")
    return call(q, k, v, g, states, do, dsT)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _gla_core(q, k, v, g, s0, cfg: _Config):
    o, s_final, _ = _forward(q, k, v, g, s0, cfg, save=False)
    return o, s_final


def _gla_core_fwd(q, k, v, g, s0, cfg: _Config):
    o, s_final, states = _forward(q, k, v, g, s0, cfg, save=True)
    return (o, s_final), (q, k, v, g, states)


def _gla_core_bwd(cfg: _Config, res, cotangents):
    q, k, v, g, states = res
    do, dsT = cotangents
    dq, dk, dv, dg, ds0 = _backward(q, k, v, g, states, do.astype(q.dtype), dsT, cfg)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dg, ds0


_gla_core.defvjp(_gla_core_fwd, _gla_core_bwd)


# ----------------------------------------------------------------------------- entry point


def default_schedule(platform: str | None = None) -> Schedule:
    """``"loop"`` for a GPU target (Triton cannot carry state over a grid axis), ``"grid"``
    elsewhere; ``platform`` defaults to the target (:func:`memarch.kernels._platform.backend`)."""
    return "loop" if (platform or _platform.backend()) == "gpu" else "grid"


def effective_chunk(t: int, chunk_size: int, schedule: Schedule) -> int:
    """Chunk length used for T tokens: ``min(chunk_size, next_pow2(T))``, at least the
    schedule's minimum (8 for ``"grid"``, 16 for ``"loop"``)."""
    return max(MIN_CHUNK[schedule], min(chunk_size, 1 << max(t - 1, 0).bit_length()))


CHUNK_RULE = "a power of two ≥ 8"  # the chunk sizes the kernels take, in words


PACKS_SEGMENTS = False  # no segment_ids: the ops fall back to their XLA chunk form


def supports_chunk_size(chunk_size: int) -> bool:
    """Whether the kernels take this chunk size: a power of two ≥ 8 (the tree of
    :func:`_tree_levels`, TPU sublane tiles, Triton's power-of-two shapes)."""
    return chunk_size >= MIN_CHUNK["grid"] and not chunk_size & (chunk_size - 1)


def _pow2_at_least_16(d: int) -> int:
    return max(16, 1 << (d - 1).bit_length())


def _to_kernel(x: jax.Array, t_pad: int, d_pad: int | None = None) -> jax.Array:
    """``[B, T, H, D]`` → ``[B, H, T + t_pad, D (+ d_pad)]`` zero-padded (identity steps)."""
    x = jnp.swapaxes(x, 1, 2)
    return jnp.pad(x, ((0, 0), (0, 0), (0, t_pad), (0, d_pad or 0)))


def gla_pallas(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array,
    *,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    interpret: _platform.Interpret = None,
    schedule: Schedule | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Chunked GLA as Pallas kernels (forward and backward); the signature of
    :func:`memarch.ops.gla` without ``segment_ids`` and ``impl``.

    Args:
      q, k: ``[B, T, H, K]``. v: ``[B, T, H, V]``; one float dtype (math in float32).
      g: log decay ≤ 0, ``[B, T, H]`` (per head) or ``[B, T, H, K]`` (per key channel).
      scale: query scale, ``K ** -0.5`` by default.
      initial_state: ``[B, H, K, V]`` (zeros when None).
      output_final_state: also return the state after the last token.
      chunk_size: tokens per chunk, a power of two ≥ 8; short inputs use
        :func:`effective_chunk`.
      interpret: ``None`` (compiled for a GPU/TPU target, interpreted for a CPU one), ``True``,
        ``False`` or ``"tpu"`` (TPU simulator, NaN-poisoned memory); see
        ``kernels/_platform.py``.
      schedule: ``"grid"``, ``"loop"`` or None (:func:`default_schedule` of the target);
        module docstring.

    Returns:
      (o ``[B, T, H, V]`` in q's dtype, final state ``[B, H, K, V]`` float32 or None).
    Under a mesh set with ``jax.set_mesh`` the kernels run per shard of batch and heads
    (:func:`memarch.kernels._sharding.shard_batch_heads`).
    """
    bsz, t, h, dk, dv = _checks.check_qkv(q, k, v)
    per_channel = _checks.check_gate("g", g, q)
    _checks.check_state(initial_state, q, v)
    _checks.check_chunk_size(chunk_size, supports_chunk_size, CHUNK_RULE)
    platform = _platform.backend(q)  # the target: compile_target, mesh, q's sharding, default
    _platform.resolve_interpret(interpret, platform)  # validates
    schedule = default_schedule(platform) if schedule is None else schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)} or None; got {schedule!r}")
    scale = _checks.resolve_scale(scale, dk)
    c = effective_chunk(t, chunk_size, schedule)
    t_pad = -(-t // c) * c - t

    g = g.astype(F32)
    if not per_channel:
        g = g[..., None]
    s0 = jnp.zeros((bsz, h, dk, dv), F32) if initial_state is None else initial_state.astype(F32)
    kp = vp = 0
    if schedule == "loop":  # Triton: power-of-two sizes; scalar gates take the per-channel path
        kp, vp = _pow2_at_least_16(dk) - dk, _pow2_at_least_16(dv) - dv
        g = jnp.broadcast_to(g, q.shape)
    gp = kp if g.shape[-1] == dk else 0
    s0 = jnp.pad(jnp.swapaxes(s0, 2, 3), ((0, 0), (0, 0), (0, vp), (0, kp)))
    args = (
        _to_kernel(q, t_pad, kp), _to_kernel(k, t_pad, kp), _to_kernel(v, t_pad, vp),
        _to_kernel(g, t_pad, gp), s0,
    )  # fmt: skip
    cfg = _Config(scale, c, g.shape[-1] != 1, interpret, schedule, platform)
    o, s_final = shard_batch_heads(functools.partial(_gla_core, cfg=cfg), *args)
    o = jnp.swapaxes(o[:, :, :t, :dv], 1, 2)
    if not output_final_state:
        return o, None
    return o, jnp.swapaxes(s_final[:, :, :dv, :dk], 2, 3)
