"""Flash attention with the additive retention bias (ALiBi / FoX / TRIM-KV), forward and backward.

Per batch row and query head ``h`` (KV head ``h // G`` under grouped-query attention)::

    s_ti = scale · q_t·k_i + (Λ_t − Λ_i) + (t − i)·a_i        for i ∈ N(t), else −∞
    o_t  = Σ_i softmax_i(s_ti) v_i,        lse_t = log Σ_i exp(s_ti)

``Λ [B, T, H]`` is the cumulative log forget gate (FoX), ``a [B, T, H]`` the per-key slope
(TRIM-KV ``log β_i``, ALiBi ``−m_h``); either may be None. ``N(t)``: keys ``i ≤ t`` of the same
segment (``segment_ids``), and ``i > t − window`` with a window. The bias is computed inside
the kernel from these per-token vectors; the ``T × T`` matrix never exists.

Forward: online softmax over key blocks (running max ``m``, sum ``l``, accumulator ``acc`` in
float32), output ``o`` and ``lse = m + log l``. Key blocks that are entirely in the future of
a query block (causal) or entirely older than its window are skipped.

Backward (FlashAttention-2): with ``P = exp(s − lse)``, ``D_t = Σ_v dO_t·O_t`` and
``dS = P ⊙ (dO Vᵀ − D)``::

    dq = scale · dS K,   dk = scale · dSᵀ Q,   dv = Pᵀ dO,
    dΛ_t = Σ_i dS_ti − Σ_{t'} dS_{t'i}|_{i=t},   da_i = Σ_t dS_ti (t − i)

computed by two kernels: one per query block (dq and the row sums), one per key block (dk, dv
and the column sums). dk and dv are produced per query head and summed over the G heads of a
group outside the kernel. Everything is wrapped in ``jax.custom_vjp``.

Two kernel layouts share this math (:func:`_scores`, :func:`_softmax_step`, :func:`_grad_block`):

* ``"grid"`` (TPU): grid ``(B, H, outer blocks, inner blocks)``; the inner axis is last and
  ``"arbitrary"``, the running state lives in VMEM scratch, and skipped blocks keep the previous
  block index so no copy is issued for them.
* ``"loop"`` (GPU, Triton lowering): grid ``(B, H, outer blocks)``; each program holds the
  whole inner sequence as a block and runs a ``fori_loop`` over only the blocks it needs
  (Triton programs run concurrently, so state cannot be carried across grid steps).

Both run in interpret mode for a CPU target (``interpret=None`` there, see
:mod:`memarch.kernels._platform`). The target — the platform the kernels are compiled for — is
an explicit ``compile_target``, else the current mesh's device, else q's sharding, else JAX's
default backend (:mod:`memarch.kernels._target`); so the same call interprets on a CPU host
and compiles for a TPU topology. Compiled for TPU, block sizes are rounded up to multiples of
128 (lane tiling of the per-key vectors); for GPU to powers of two ≥ 16, and D, V are
zero-padded to powers of two ≥ 16.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from memarch.kernels import _platform
from memarch.kernels._sharding import kernel_mesh, shard_batch_heads

VARIANTS = ("grid", "loop")
_NEG = -1e30  # finite "−∞": keeps the online softmax free of inf − inf
_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything a kernel needs that is not an array (hashable: a custom_vjp nondiff arg)."""

    scale: float
    window: int | None
    block_q: int
    block_k: int
    interpret: _platform.Interpret
    variant: str
    platform: str = "cpu"  # the target platform, resolved once per call (kernels/_platform.py)
    has_lam: bool = False
    has_slope: bool = False
    has_seg: bool = False
    nq: int = 0
    nk: int = 0
    heads_per_kv: int = 1
    highest: bool = False  # float32 inputs: exact (not TF32/bf16-pass) matmuls
    shape: tuple[int, ...] = ()  # (B, T, H, D, H_kv, V) of the unpadded inputs
    dtypes: tuple[str | None, ...] = ()  # of q, k, v, lam, slope (cotangent dtypes)


# --------------------------------------------------------------------------- shared math


def _dot(a, b, contract, st: _Static):
    """``lax.dot_general`` without batch dims, float32 accumulation."""
    return lax.dot_general(
        a,
        b,
        (contract, ((), ())),
        preferred_element_type=_F32,
        precision=lax.Precision.HIGHEST if st.highest else None,
    )


def _scores(st: _Static, q, k, q0, k0, qv: dict, kv: dict):
    """Biased, masked logits ``s [bq, bk]`` (masked = −1e30), the mask, and ``t − i`` (f32).

    ``q [bq, D]``, ``k [bk, D]`` start at sequence positions ``q0`` and ``k0``; ``qv`` holds the
    query-side vectors ``lam [bq, 1]``, ``seg [bq, 1]``; ``kv`` the key-side ``lam [1, bk]``,
    ``slope [1, bk]``, ``seg [1, bk]`` (each only when present).
    """
    s = _dot(q, k, ((1,), (1,)), st) * st.scale
    shape = s.shape
    qpos = q0 + lax.broadcasted_iota(jnp.int32, shape, 0)
    kpos = k0 + lax.broadcasted_iota(jnp.int32, shape, 1)
    mask = kpos <= qpos
    if st.window is not None:
        mask = mask & (kpos > qpos - st.window)
    if st.has_seg:
        mask = mask & (qv["seg"] == kv["seg"])
    if st.has_lam:
        s = s + (qv["lam"] - kv["lam"])
    dt = (qpos - kpos).astype(_F32)
    if st.has_slope:
        s = s + dt * kv["slope"]
    return jnp.where(mask, s, _NEG), mask, dt


def _softmax_step(st: _Static, carry, s, mask, v):
    """One online-softmax update of ``(m [bq,1], l [bq,1], acc [bq,V])`` with a key block."""
    m, l, acc = carry
    m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
    p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
    alpha = jnp.exp(m - m_new)
    l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
    acc = alpha * acc + _dot(p.astype(v.dtype), v, ((1,), (0,)), st)
    return m_new, l, acc


def _finish(m, l, acc):
    """``(o, lse)`` from the final online-softmax state (rows without a key give o = 0)."""
    l = jnp.where(l > 0, l, 1.0)
    return acc / l, m + jnp.log(l)


def _grad_block(st: _Static, s, mask, lse, delta, do, v):
    """``P = exp(s − lse)`` and ``dS = P ⊙ (dO Vᵀ − D)`` for one (query, key) block pair."""
    p = jnp.where(mask, jnp.exp(s - lse), 0.0)
    dp = _dot(do, v, ((1,), (1,)), st)
    return p, p * (dp - delta)


# --------------------------------------------------------------------------- block ranges


def _div(a, b: int):
    """``a // b`` for a non-negative traced int ``a``, as truncating division: equal there, and
    it lowers to Mosaic without the ``sign`` of floor division, whose TPU lowering asks for the
    chip generation (so the kernels also lower where only the inputs' sharding names the chip)."""
    return lax.div(a, jnp.asarray(b, jnp.asarray(a).dtype))


def _kv_range(st: _Static, i):
    """Inclusive range of key blocks that query block ``i`` attends to."""
    hi = _div((i + 1) * st.block_q - 1, st.block_k)
    if st.window is None:
        return 0, hi
    return _div(jnp.maximum(i * st.block_q - st.window + 1, 0), st.block_k), hi


def _q_range(st: _Static, j):
    """Inclusive range of query blocks that attend to key block ``j``."""
    lo = _div(j * st.block_k, st.block_q)
    if st.window is None:
        return lo, st.nq - 1
    return lo, jnp.minimum(_div((j + 1) * st.block_k + st.window - 2, st.block_q), st.nq - 1)


# --------------------------------------------------------------------------- refs and specs

# Query-side arrays are "tall" ([.., T, X] blocks); per-key vectors are "wide" ([.., 1, T]).
_WIDE = {"lam_k", "slope", "seg_k", "dlam_k", "dslope"}
_QSIDE = ("q", "do", "lse", "delta", "lam_q", "seg_q")
_KSIDE = ("k", "v", "lam_k", "slope", "seg_k")


def _names(st: _Static, base: tuple[str, ...]) -> list[str]:
    keep = {"lam_q": st.has_lam, "lam_k": st.has_lam, "slope": st.has_slope}
    keep |= {"seg_q": st.has_seg, "seg_k": st.has_seg}
    return [n for n in base if keep.get(n, True)]


def _load(ref, name: str, start=None, size: int = 0):
    """The whole block, or ``size`` positions from ``start`` along the sequence axis."""
    if start is None:
        return ref[...]
    idx = pl.ds(pl.multiple_of(start, size), size)
    return ref[:, idx] if name in _WIDE else ref[idx, :]


def _side(refs: dict, names, start=None, size: int = 0) -> dict:
    """Loads one side's arrays; the vectors are returned under short names (lam, seg, slope)."""
    out = {}
    for n in names:
        if n in refs:
            out[n.removesuffix("_q").removesuffix("_k")] = _load(refs[n], n, start, size)
    return out


def _spec(name: str, arr_shape, blk: int, seq_block: Callable, head: Callable):
    """BlockSpec of one input/output; ``seq_block(*grid)`` gives the sequence block index."""
    if name.startswith("seg"):  # [B, T, 1] or [B, 1, T]: per batch row, not per head
        if name in _WIDE:
            return pl.BlockSpec((None, 1, blk), lambda b, h, *r: (b, 0, seq_block(b, h, *r)))
        return pl.BlockSpec((None, blk, 1), lambda b, h, *r: (b, seq_block(b, h, *r), 0))
    if name in _WIDE:
        return pl.BlockSpec(
            (None, None, 1, blk), lambda b, h, *r: (b, head(h), 0, seq_block(b, h, *r))
        )
    return pl.BlockSpec(
        (None, None, blk, arr_shape[-1]), lambda b, h, *r: (b, head(h), seq_block(b, h, *r), 0)
    )


def _call(
    st: _Static, kernel, arrays: dict, out_shapes: dict, scratch, *, rows: str, num_warps: int = 4
):
    """One pallas_call. ``rows`` = "q" (one program per query block: forward, dq) or "k" (per
    key block: dk, dv). The other side is the inner axis: a grid axis or an in-kernel loop."""
    b, h = arrays["q"].shape[:2]
    n_out = st.nq if rows == "q" else st.nk
    outer_blk, inner_blk = (st.block_q, st.block_k) if rows == "q" else (st.block_k, st.block_q)
    inner_range = (lambda i: _kv_range(st, i)) if rows == "q" else (lambda j: _q_range(st, j))
    outer_side = _QSIDE if rows == "q" else _KSIDE
    g = st.heads_per_kv

    def head_of(name):
        return (lambda hh: _div(hh, g)) if name in ("k", "v") else (lambda hh: hh)

    if st.variant == "grid":
        n_in = st.nk if rows == "q" else st.nq
        grid = (b, h, n_out, n_in)

        def inner_block(b_, h_, o, i):  # skipped steps repeat a needed block: no new copy
            lo, hi = inner_range(o)
            return jnp.minimum(jnp.maximum(i, lo), hi)

        semantics = ("parallel", "parallel", "parallel", "arbitrary")
    else:
        grid = (b, h, n_out)
        semantics = ("parallel", "parallel", "parallel")

    def outer_block(b_, h_, o, *_):
        return o

    in_specs = []
    for name, x in arrays.items():
        if name in outer_side:
            in_specs.append(_spec(name, x.shape, outer_blk, outer_block, head_of(name)))
        elif st.variant == "grid":
            in_specs.append(_spec(name, x.shape, inner_blk, inner_block, head_of(name)))
        else:
            full = x.shape[-2] if name not in _WIDE else x.shape[-1]
            in_specs.append(_spec(name, x.shape, full, lambda *_: 0, head_of(name)))
    out_specs = [
        _spec(name, sd.shape, outer_blk, outer_block, lambda hh: hh)
        for name, sd in out_shapes.items()
    ]
    if st.variant == "grid":
        scratch_shapes = [pltpu.VMEM(shape, _F32) for shape in scratch]
    else:
        scratch_shapes = []
    return pl.pallas_call(
        functools.partial(kernel, st, tuple(arrays), tuple(out_shapes)),
        out_shape=tuple(out_shapes.values()),
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        scratch_shapes=scratch_shapes,
        interpret=_platform.resolve_interpret(st.interpret, st.platform),
        compiler_params=_platform.compiler_params(
            semantics, platform=st.platform, num_warps=num_warps
        ),
        # the kernel's name in the compiled program: flash_attention_{fwd, dq, dkv}
        name="flash_attention_" + kernel.__name__.strip("_").removesuffix("_kernel"),
    )(*arrays.values())


def _split_refs(in_names, out_names, refs):
    n_in, n_out = len(in_names), len(out_names)
    ins = dict(zip(in_names, refs[:n_in], strict=True))
    outs = dict(zip(out_names, refs[n_in : n_in + n_out], strict=True))
    return ins, outs, refs[n_in + n_out :]


# --------------------------------------------------------------------------- kernels


def _fwd_kernel(st: _Static, in_names, out_names, *refs):
    ins, outs, scratch = _split_refs(in_names, out_names, refs)
    i = pl.program_id(2)
    qv = _side(ins, ("lam_q", "seg_q"))
    q = ins["q"][...]

    def step(j, carry, kv):
        s, mask, _ = _scores(st, q, kv["k"], i * st.block_q, j * st.block_k, qv, kv)
        return _softmax_step(st, carry, s, mask, kv["v"])

    def write(m, l, acc):
        o, lse = _finish(m, l, acc)
        outs["o"][...] = o.astype(outs["o"].dtype)
        outs["lse"][...] = lse

    lo, hi = _kv_range(st, i)
    if st.variant == "loop":
        init = (
            jnp.full((st.block_q, 1), _NEG, _F32),
            jnp.zeros((st.block_q, 1), _F32),
            jnp.zeros((st.block_q, ins["v"].shape[-1]), _F32),
        )
        kside = _names(st, _KSIDE)
        body = lambda j, c: step(j, c, _side(ins, kside, j * st.block_k, st.block_k))
        write(*lax.fori_loop(lo, hi + 1, body, init))
        return

    m_sc, l_sc, acc_sc = scratch
    j = pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, _NEG, _F32)
        l_sc[...] = jnp.zeros(l_sc.shape, _F32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, _F32)

    @pl.when((j >= lo) & (j <= hi))
    def _compute():
        m, l, acc = step(j, (m_sc[...], l_sc[...], acc_sc[...]), _side(ins, _KSIDE))
        m_sc[...], l_sc[...], acc_sc[...] = m, l, acc

    @pl.when(j == st.nk - 1)
    def _write():
        write(m_sc[...], l_sc[...], acc_sc[...])


def _dq_kernel(st: _Static, in_names, out_names, *refs):
    ins, outs, scratch = _split_refs(in_names, out_names, refs)
    i = pl.program_id(2)
    qs = _side(ins, _QSIDE)

    def step(j, carry, kv):
        dq, dlam = carry
        s, mask, _ = _scores(st, qs["q"], kv["k"], i * st.block_q, j * st.block_k, qs, kv)
        _, ds = _grad_block(st, s, mask, qs["lse"], qs["delta"], qs["do"], kv["v"])
        dq = dq + _dot(ds.astype(kv["k"].dtype), kv["k"], ((1,), (0,)), st)
        if st.has_lam:
            dlam = dlam + jnp.sum(ds, axis=1, keepdims=True)
        return dq, dlam

    def write(dq, dlam):
        outs["dq"][...] = dq * st.scale
        if st.has_lam:
            outs["dlam_q"][...] = dlam

    lo, hi = _kv_range(st, i)
    init_shapes = ((st.block_q, qs["q"].shape[-1]), (st.block_q, 1))
    if st.variant == "loop":
        init = tuple(jnp.zeros(s, _F32) for s in init_shapes)
        kside = _names(st, _KSIDE)
        body = lambda j, c: step(j, c, _side(ins, kside, j * st.block_k, st.block_k))
        write(*lax.fori_loop(lo, hi + 1, body, init))
        return

    dq_sc, dlam_sc = scratch
    j = pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, _F32)
        dlam_sc[...] = jnp.zeros(dlam_sc.shape, _F32)

    @pl.when((j >= lo) & (j <= hi))
    def _compute():
        dq, dlam = step(j, (dq_sc[...], dlam_sc[...]), _side(ins, _KSIDE))
        dq_sc[...], dlam_sc[...] = dq, dlam

    @pl.when(j == st.nk - 1)
    def _write():
        write(dq_sc[...], dlam_sc[...])


def _dkv_kernel(st: _Static, in_names, out_names, *refs):
    ins, outs, scratch = _split_refs(in_names, out_names, refs)
    j = pl.program_id(2)
    kv = _side(ins, _KSIDE)

    def step(i, carry, qs):
        dk, dv, dlam, dslope = carry
        s, mask, dt = _scores(st, qs["q"], kv["k"], i * st.block_q, j * st.block_k, qs, kv)
        p, ds = _grad_block(st, s, mask, qs["lse"], qs["delta"], qs["do"], kv["v"])
        # Transposed left operands are explicit (.T): the form Mosaic TPU lowers directly.
        dv = dv + _dot(p.T.astype(qs["do"].dtype), qs["do"], ((1,), (0,)), st)
        dk = dk + _dot(ds.T.astype(qs["q"].dtype), qs["q"], ((1,), (0,)), st)
        if st.has_lam:
            dlam = dlam - jnp.sum(ds, axis=0, keepdims=True)
        if st.has_slope:
            dslope = dslope + jnp.sum(ds * dt, axis=0, keepdims=True)
        return dk, dv, dlam, dslope

    def write(dk, dv, dlam, dslope):
        outs["dk"][...] = dk * st.scale
        outs["dv"][...] = dv
        if st.has_lam:
            outs["dlam_k"][...] = dlam
        if st.has_slope:
            outs["dslope"][...] = dslope

    lo, hi = _q_range(st, j)
    shapes = (
        (st.block_k, kv["k"].shape[-1]),
        (st.block_k, kv["v"].shape[-1]),
        (1, st.block_k),
        (1, st.block_k),
    )
    if st.variant == "loop":
        init = tuple(jnp.zeros(s, _F32) for s in shapes)
        qside = _names(st, _QSIDE)
        body = lambda i, c: step(i, c, _side(ins, qside, i * st.block_q, st.block_q))
        write(*lax.fori_loop(lo, hi + 1, body, init))
        return

    i = pl.program_id(3)

    @pl.when(i == 0)
    def _init():
        for sc in scratch:
            sc[...] = jnp.zeros(sc.shape, _F32)

    @pl.when((i >= lo) & (i <= hi))
    def _compute():
        new = step(i, tuple(sc[...] for sc in scratch), _side(ins, _QSIDE))
        for sc, x in zip(scratch, new, strict=True):
            sc[...] = x

    @pl.when(i == st.nq - 1)
    def _write():
        write(*(sc[...] for sc in scratch))


# --------------------------------------------------------------------------- host side


def _to_heads(x, tp: int, fill=0):
    """``[B, T, H, X] -> [B, H, Tp, X]`` zero-padded along T (and X already padded)."""
    x = jnp.swapaxes(x, 1, 2)
    return jnp.pad(x, [(0, 0), (0, 0), (0, tp - x.shape[2]), (0, 0)], constant_values=fill)


def _pad_last(x, n: int):
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def _vectors(lam, slope, seg, tp: int) -> dict:
    """Per-token inputs in kernel layout: tall ``[B, H, Tp, 1]`` and wide ``[B, H, 1, Tp]``."""
    out = {}
    if lam is not None:
        lam_t = _to_heads(lam[..., None].astype(_F32), tp)  # [B, H, Tp, 1]
        out["lam_q"], out["lam_k"] = lam_t, jnp.swapaxes(lam_t, 2, 3)
    if slope is not None:
        out["slope"] = jnp.swapaxes(_to_heads(slope[..., None].astype(_F32), tp), 2, 3)
    if seg is not None:
        seg_p = jnp.pad(seg.astype(jnp.int32), [(0, 0), (0, tp - seg.shape[1])], constant_values=-1)
        out["seg_q"], out["seg_k"] = seg_p[:, :, None], seg_p[:, None, :]
    return out


def _padded_dim(st: _Static, n: int) -> int:
    """Head dims are zero-padded to a power of two ≥ 16 for the compiled GPU (Triton) path."""
    if st.variant == "loop" and _platform.resolve_interpret(st.interpret, st.platform) is False:
        return max(16, 1 << (n - 1).bit_length())
    return n


def _forward(st: _Static, q, k, v, lam, slope, seg):
    b, t, h, d = q.shape
    tp = st.nq * st.block_q
    dp, vp = _padded_dim(st, d), _padded_dim(st, v.shape[-1])
    arrays = {
        "q": _to_heads(_pad_last(q, dp), tp),
        "k": _to_heads(_pad_last(k, dp), tp),
        "v": _to_heads(_pad_last(v, vp), tp),
        **_vectors(lam, slope, seg, tp),
    }
    out_shapes = {
        "o": jax.ShapeDtypeStruct((b, h, tp, vp), q.dtype),
        "lse": jax.ShapeDtypeStruct((b, h, tp, 1), _F32),
    }
    scratch = [(st.block_q, 1), (st.block_q, 1), (st.block_q, vp)]
    o_t, lse = _call(st, _fwd_kernel, arrays, out_shapes, scratch, rows="q")
    o = jnp.swapaxes(o_t, 1, 2)[:, :t, :, : v.shape[-1]]
    return o, (arrays, o_t, lse)


def _backward(st: _Static, res, do):
    b, t, h, d, hkv, vd = st.shape
    arrays, o_t, lse = res
    tp, dp = st.nq * st.block_q, arrays["q"].shape[-1]
    do_t = _to_heads(_pad_last(do, o_t.shape[-1]), tp)
    delta = jnp.sum(do_t.astype(_F32) * o_t.astype(_F32), axis=-1, keepdims=True)
    arrays = {**arrays, "do": do_t, "lse": lse, "delta": delta}
    dq_out = {"dq": jax.ShapeDtypeStruct((b, h, tp, dp), _F32)}
    if st.has_lam:
        dq_out["dlam_q"] = jax.ShapeDtypeStruct((b, h, tp, 1), _F32)
    dq_scratch = [(st.block_q, dp), (st.block_q, 1)]
    dq_res = _call(st, _dq_kernel, arrays, dq_out, dq_scratch, rows="q", num_warps=8)
    vp = o_t.shape[-1]
    dkv_out = {
        "dk": jax.ShapeDtypeStruct((b, h, tp, dp), _F32),
        "dv": jax.ShapeDtypeStruct((b, h, tp, vp), _F32),
    }
    if st.has_lam:
        dkv_out["dlam_k"] = jax.ShapeDtypeStruct((b, h, 1, tp), _F32)
    if st.has_slope:
        dkv_out["dslope"] = jax.ShapeDtypeStruct((b, h, 1, tp), _F32)
    dkv_scratch = [(st.block_k, dp), (st.block_k, vp), (1, st.block_k), (1, st.block_k)]
    dkv_res = _call(st, _dkv_kernel, arrays, dkv_out, dkv_scratch, rows="k", num_warps=8)
    grads = dict(zip(dq_out, dq_res, strict=True)) | dict(zip(dkv_out, dkv_res, strict=True))

    def back(x, n):  # [B, H, Tp, X] -> [B, T, H, n]
        return jnp.swapaxes(x, 1, 2)[:, :t, :, :n]

    def group_sum(x):  # per query head -> per KV head
        return x.reshape(b, hkv, h // hkv, *x.shape[2:]).sum(axis=2)

    dq = back(grads["dq"], d)
    dk = back(group_sum(grads["dk"]), d)
    dv = back(group_sum(grads["dv"]), vd)
    dlam = dslope = None
    if st.has_lam:
        dlam = jnp.swapaxes(grads["dlam_q"][..., 0] + grads["dlam_k"][:, :, 0], 1, 2)[:, :t]
    if st.has_slope:
        dslope = jnp.swapaxes(grads["dslope"][:, :, 0], 1, 2)[:, :t]
    return dq, dk, dv, dlam, dslope


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _flash(q, k, v, lam, slope, seg, st: _Static):
    return _forward(st, q, k, v, lam, slope, seg)[0]


def _flash_fwd(q, k, v, lam, slope, seg, st: _Static):
    return _forward(st, q, k, v, lam, slope, seg)


def _flash_bwd(st: _Static, res, do):
    grads = _backward(st, res, do)
    cast = (None if g is None else g.astype(dt) for g, dt in zip(grads, st.dtypes, strict=True))
    return (*cast, None)


_flash.defvjp(_flash_fwd, _flash_bwd)


CHUNK_RULE = "a positive int"  # block sizes the kernels take (rounded up where compiled)
PACKS_SEGMENTS = True  # segment_ids are masked in-kernel


def supports_chunk_size(chunk_size: int) -> bool:
    """Whether the kernels take this block size: any positive int (:func:`_device_block`
    rounds it for the compiled lowerings)."""
    return chunk_size > 0


def _device_block(block: int, interpret, platform: str) -> int:
    """The block size actually used on target ``platform``: rounded for the compiled TPU / GPU
    lowering."""
    if _platform.resolve_interpret(interpret, platform) is not False:
        return block
    if platform == "tpu":
        return -(-block // 128) * 128
    return max(16, 1 << (block - 1).bit_length())


def _run_sharded(run, mesh, q, k, v, lam, slope, seg):
    """``run`` per (batch, KV-head) shard of ``mesh`` (see ``_sharding``).

    The kernel layout is ``[B, T, H, ·]`` with query head ``i`` reading KV head ``i // G``, so
    every input is viewed as ``[B, H_kv, ...]`` (query heads grouped by their KV head) for
    :func:`shard_batch_heads` and viewed back inside each shard.
    """
    b, t, h, _ = q.shape
    hkv = k.shape[2]
    g = h // hkv
    by_kv = lambda x: jnp.swapaxes(x.reshape(b, t, hkv, g, *x.shape[3:]), 1, 2)  # [B,Hkv,T,G,.]
    names = [n for n, x in (("lam", lam), ("slope", slope), ("seg", seg)) if x is not None]
    extra = {"lam": lam, "slope": slope, "seg": seg}
    packed = [by_kv(q), jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)]
    for n in names:
        x = extra[n]
        packed.append(jnp.broadcast_to(x[:, None], (b, hkv, t)) if n == "seg" else by_kv(x))

    def local(qg, kt, vt, *rest):
        lb, lkv = qg.shape[:2]
        unkv = lambda x: jnp.swapaxes(x, 1, 2).reshape(lb, t, lkv * g, *x.shape[4:])
        got = dict(zip(names, rest, strict=True))
        o = run(
            unkv(qg), jnp.swapaxes(kt, 1, 2), jnp.swapaxes(vt, 1, 2),
            unkv(got["lam"]) if "lam" in got else None,
            unkv(got["slope"]) if "slope" in got else None,
            got["seg"][:, 0] if "seg" in got else None,
        )  # fmt: skip
        return jnp.swapaxes(o.reshape(lb, t, lkv, g, -1), 1, 2)

    o = shard_batch_heads(local, *packed, mesh=mesh)
    return jnp.swapaxes(o, 1, 2).reshape(b, t, h, -1)


def flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    lam: jax.Array | None = None,
    slope: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    *,
    scale: float,
    window: int | None = None,
    block_q: int = 128,
    block_k: int = 128,
    interpret: _platform.Interpret = None,
    variant: str | None = None,
) -> jax.Array:
    """Causal attention with the bias ``Λ_t − Λ_i + (t − i)·a_i`` (module docstring).

    Args:
      q: ``[B, T, H, D]``; k: ``[B, T, H_kv, D]``; v: ``[B, T, H_kv, V]`` (one float dtype,
        H a multiple of H_kv).
      lam: cumulative log forget gate Λ ``[B, T, H]`` (float) or None.
      slope: per-key slope ``a`` ``[B, T, H]`` (float) or None.
      segment_ids: int ``[B, T]`` or None; queries see only keys of their own segment.
      scale: query scale (``D ** -0.5`` in the op). window: keys each query sees (itself
        included) or None.
      block_q, block_k: query / key block sizes (rounded on compiled backends, see module doc).
      interpret: None / True / False / "tpu" (:mod:`memarch.kernels._platform`); None compiles
        for a GPU/TPU target and interprets for a CPU one.
      variant: "grid" or "loop"; None = "loop" for a compiled GPU target, "grid" elsewhere.

    The target platform is an explicit ``compile_target``, else the current mesh's device,
    else q's sharding, else JAX's default backend (:mod:`memarch.kernels._target`).

    Returns:
      o ``[B, T, H, V]`` in q's dtype; differentiable in q, k, v, lam and slope.
    """
    b, t, h, d = q.shape
    hkv = k.shape[2]
    if k.shape != (b, t, hkv, d) or v.shape[:3] != (b, t, hkv) or h % hkv:
        raise ValueError(
            f"q, k, v must have shapes [B, T, H, D], [B, T, H_kv, D], [B, T, H_kv, V] with "
            f"H_kv dividing H; got {q.shape}, {k.shape}, {v.shape}"
        )
    if not (q.dtype == k.dtype == v.dtype and jnp.issubdtype(q.dtype, jnp.floating)):
        raise ValueError(f"q, k, v must share one float dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, x in (("lam", lam), ("slope", slope)):
        if x is not None and x.shape != (b, t, h):
            raise ValueError(f"{name} must have shape {(b, t, h)} ([B, T, H]); got {x.shape}")
        if x is not None and not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating point; got {x.dtype}")
    if segment_ids is not None and segment_ids.shape != (b, t):
        raise ValueError(f"segment_ids must have shape {(b, t)} ([B, T]); got {segment_ids.shape}")
    for name, blk in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(blk, int) or isinstance(blk, bool) or blk <= 0:
            raise ValueError(f"{name} must be a positive int; got {blk!r}")
    if window is not None and (
        not isinstance(window, int) or isinstance(window, bool) or window <= 0
    ):
        raise ValueError(f"window must be a positive int or None; got {window!r}")
    platform = _platform.backend(q)  # the target, resolved once for forward and backward
    compiled_gpu = _platform.resolve_interpret(interpret, platform) is False and platform == "gpu"
    if variant is None:
        variant = "loop" if compiled_gpu else "grid"
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)} or None; got {variant!r}")
    if variant == "grid" and compiled_gpu:
        raise ValueError('variant="grid" needs sequential grid steps: use "loop" on GPU')
    bq, bk = (_device_block(b, interpret, platform) for b in (block_q, block_k))

    def run(q, k, v, lam, slope, segment_ids):  # shapes are per shard under a mesh
        b, t, h, d = q.shape
        hkv = k.shape[2]
        tp = -(-t // math.lcm(bq, bk)) * math.lcm(bq, bk)
        st = _Static(
            scale=float(scale),
            window=window,
            block_q=bq,
            block_k=bk,
            interpret=interpret,
            variant=variant,
            platform=platform,
            has_lam=lam is not None,
            has_slope=slope is not None,
            has_seg=segment_ids is not None,
            nq=tp // bq,
            nk=tp // bk,
            heads_per_kv=h // hkv,
            highest=q.dtype == jnp.float32,
            shape=(b, t, h, d, hkv, v.shape[-1]),
            dtypes=tuple(
                None if x is None else jnp.dtype(x.dtype).name for x in (q, k, v, lam, slope)
            ),
        )
        return _flash(q, k, v, lam, slope, segment_ids, st)

    mesh = kernel_mesh(q, k, v, lam, slope, segment_ids)  # set_mesh, else the inputs' mesh
    if mesh.empty:
        return run(q, k, v, lam, slope, segment_ids)
    return _run_sharded(run, mesh, q, k, v, lam, slope, segment_ids)
