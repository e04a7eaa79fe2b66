"""Causal softmax attention with an additive decay bias (ALiBi, FoX, TRIM-KV in one op).

Per batch row and query head, with ``Λ_t = Σ_{l≤t} log f_l`` (cumulative log forget gate of
the query's head) and a per-key log-retention slope ``a_i``::

    logit_ti = scale · q_t·k_i + (Λ_t − Λ_i) + (t − i)·a_i          for i ∈ N(t)
    o_t      = Σ_{i ∈ N(t)} softmax_i(logit_ti) v_i

``N(t)`` is every earlier key of the same segment (``t`` included), or the last ``window`` of
them. Special cases:

- ``log_fgate = key_slope = None``: plain causal softmax attention;
- FoX (arXiv 2503.02130): ``log_fgate = logsigmoid(w·x + b)``, no slope — weight ∝
  ``Π_{i<l≤t} f_l · e^{q·k}``;
- TRIM-KV training (arXiv 2512.03324): ``key_slope = log β_i`` — weight ∝ ``β_i^{t−i} e^{q·k}``
  (an *additive* bias: a forgotten key gets logit −∞, not 0);
- ALiBi: ``key_slope = −m_h`` (constant per head).

Shapes: q ``[B, T, H, D]``; k ``[B, T, H_kv, D]``; v ``[B, T, H_kv, V]`` with H a multiple of
H_kv (grouped-query attention: query head ``h`` reads KV head ``h // (H / H_kv)``).
``log_fgate`` and ``key_slope`` are float ``[B, T, H]`` (per query head) or ``[B, T, H_kv]``
(shared by the query heads of a group), used in float32. Output ``[B, T, H, V]`` in q's dtype.
``segment_ids [B, T]`` packs sequences: no query sees a key of another segment, so Λ needs no
reset (its differences never cross a boundary) and ``t − i`` is the distance inside a segment.

Implementations (``impl``, the vocabulary of :mod:`memarch.ops._dispatch`): ``"naive"``
materialises the ``T × T`` logits (the reference); ``"chunk"`` (blockwise) scans over key
blocks of ``block_size`` with an online softmax, holding ``T × block_size`` logits at a time
and never the ``T × T`` matrix. Its backward pass (``jax.custom_vjp``) is flash-attention
style: it saves only the output and the per-query log-sum-exp, and recomputes each key block's
weights, so training memory is O(T·D) as well;
the gradients of Λ and a are reduced per block (``dΛ``, then autodiff's reverse cumsum gives
``d log f``). ``"pallas"`` is the flash-attention kernel
:func:`memarch.kernels.flash_attention.flash_attention` (forward and backward Pallas kernels,
the bias computed in-kernel from Λ and a; compiled on GPU/TPU, interpreted on CPU).
``"auto"`` is ``"pallas"`` on GPU and TPU and ``"chunk"`` elsewhere (the XLA fallback).

:func:`decay_attention_cached` attends a few queries to an explicit key set with absolute
positions (a decode cache, possibly after eviction) and also returns the attention weights,
which eviction policies score.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from memarch.kernels import _checks
from memarch.kernels import flash_attention as flash_kernel
from memarch.ops._dispatch import resolve_impl

_NEG = -1e30  # finite "−∞" for masked logits: keeps the online softmax free of inf − inf


def _check_inputs(q, k, v) -> tuple[int, int, int, int, int]:
    """Checks q ``[B, T, H, D]``, k ``[B, T, H_kv, D]``, v ``[B, T, H_kv, V]``."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must have shape [B, T, H, D] (rank 4); got shape {x.shape}")
    b, t, h, d = q.shape
    if k.shape[:2] != (b, t) or k.shape[3] != d:
        raise ValueError(
            f"k must have shape [B, T, H_kv, D] = ({b}, {t}, H_kv, {d}) to match q; got {k.shape}"
        )
    hkv = k.shape[2]
    if h % hkv:
        raise ValueError(f"the number of KV heads ({hkv}) must divide the query heads ({h})")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must have shape {k.shape[:3]} + (V,) ([B, T, H_kv, V]); got {v.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise ValueError(f"q, k, v must be floating point; got {q.dtype}")
    return b, t, h, hkv, d


def _per_head(name: str, x: jax.Array | None, b: int, t: int, h: int, hkv: int) -> jax.Array | None:
    """``[B, T, H]`` or ``[B, T, H_kv]`` -> float32 ``[B, T, H_kv, G]`` (G = H / H_kv)."""
    if x is None:
        return None
    g = h // hkv
    if x.shape == (b, t, h):
        out = x.reshape(b, t, hkv, g)
    elif x.shape == (b, t, hkv):
        out = jnp.broadcast_to(x[..., None], (b, t, hkv, g))
    else:
        raise ValueError(
            f"{name} must have shape {(b, t, h)} ([B, T, H]) or {(b, t, hkv)} ([B, T, H_kv]); "
            f"got {x.shape}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point; got {x.dtype}")
    return out.astype(jnp.float32)


def check_window(window: int | None) -> None:
    if window is not None and (
        not isinstance(window, int) or isinstance(window, bool) or window <= 0
    ):
        raise ValueError(
            f"window must be a positive int (keys each query sees, itself included) or None; "
            f"got {window!r}"
        )


def biased_logits(
    qg: jax.Array,
    k: jax.Array,
    q_pos: jax.Array,
    k_pos: jax.Array,
    *,
    scale: float,
    q_lam: jax.Array | None = None,
    k_lam: jax.Array | None = None,
    k_slope: jax.Array | None = None,
    window: int | None = None,
    extra_mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Float32 logits ``[B, H_kv, G, Tq, S]`` and the visibility mask ``[B, H_kv, 1, Tq, S]``.

    ``qg [B, Tq, H_kv, G, D]``, ``k [B, S, H_kv, D]``; ``q_pos [B, Tq]`` and ``k_pos
    [B, S, H_kv]`` absolute positions (key position −1 = empty slot); ``q_lam [B, Tq, H_kv, G]``,
    ``k_lam [B, S, H_kv, G]`` (Λ) and ``k_slope [B, S, H_kv, G]`` (a) or None;
    ``extra_mask [B, Tq, S]`` (e.g. same segment) or None. Key i is visible to query t when
    ``0 ≤ pos_i ≤ pos_t`` (and ``pos_i > pos_t − window``). Masked logits are −1e30.
    """
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    qp = q_pos[:, None, None, :, None]  # [B, 1, 1, Tq, 1]
    kp = jnp.transpose(k_pos, (0, 2, 1))[:, :, None, None, :]  # [B, H_kv, 1, 1, S]
    mask = (kp >= 0) & (kp <= qp)
    if window is not None:
        mask &= kp > qp - window
    if extra_mask is not None:
        mask &= extra_mask[:, None, None]
    if q_lam is not None:
        logits += jnp.transpose(q_lam, (0, 2, 3, 1))[..., None]
        logits -= jnp.transpose(k_lam, (0, 2, 3, 1))[..., None, :]
    if k_slope is not None:
        dt = (qp - kp).astype(jnp.float32)
        logits += dt * jnp.transpose(k_slope, (0, 2, 3, 1))[..., None, :]
    return jnp.where(mask, logits, _NEG), mask


def _masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.where(mask, probs, 0.0)  # rows without a visible key give 0, not a uniform mix


def _naive(qg, k, v, lam, slope, pos, seg_mask, scale, window):
    b, t = qg.shape[:2]
    kpos = jnp.broadcast_to(pos[:, :, None], (b, t, k.shape[2]))
    logits, mask = biased_logits(
        qg,
        k,
        pos,
        kpos,
        scale=scale,
        q_lam=lam,
        k_lam=lam,
        k_slope=slope,
        window=window,
        extra_mask=seg_mask,
    )
    probs = _masked_softmax(logits, mask)
    return jnp.einsum(
        "bkgts,bskd->btkgd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32
    )


def _key_blocks(x, n: int, block_size: int, fill=0):
    """``[B, T, ...] -> [n, B, block_size, ...]`` (T padded with ``fill``); None stays None."""
    if x is None:
        return None
    b, t = x.shape[:2]
    x = jnp.pad(
        x, [(0, 0), (0, n * block_size - t)] + [(0, 0)] * (x.ndim - 2), constant_values=fill
    )
    return jnp.moveaxis(x.reshape(b, n, block_size, *x.shape[2:]), 1, 0)


def _unblock(x, t: int):
    """``[n, B, block, ...] -> [B, T, ...]`` (inverse of :func:`_key_blocks`, padding cut)."""
    x = jnp.moveaxis(x, 0, 1)
    return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :t]


def _scan_inputs(qg, k, v, lam, slope, seg, block_size):
    b, t, hkv = k.shape[:3]
    n = -(-t // block_size)
    pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    kpos = jnp.broadcast_to(pos[:, :, None], (b, t, hkv))
    xs = dict(
        k=_key_blocks(k, n, block_size),
        v=_key_blocks(v, n, block_size),
        pos=_key_blocks(kpos, n, block_size, -1),
        lam=_key_blocks(lam, n, block_size),
        slope=_key_blocks(slope, n, block_size),
        seg=_key_blocks(seg, n, block_size),
    )
    return pos, xs


def _block_logits(qg, blk, pos, lam, seg, scale, window):
    extra = None if seg is None else seg[:, :, None] == blk["seg"][:, None, :]
    return biased_logits(
        qg,
        blk["k"],
        pos,
        blk["pos"],
        scale=scale,
        q_lam=lam,
        k_lam=blk["lam"],
        k_slope=blk["slope"],
        window=window,
        extra_mask=extra,
    )


def _flash_forward(qg, k, v, lam, slope, seg, scale, window, block_size):
    """Online softmax over key blocks: (o ``[B, T, H_kv, G, V]`` f32, lse ``[B, H_kv, G, T]``)."""
    b, t, hkv, g, _ = qg.shape
    pos, xs = _scan_inputs(qg, k, v, lam, slope, seg, block_size)

    def body(carry, blk):
        m, l, acc = carry
        s, mask = _block_logits(qg, blk, pos, lam, seg, scale, window)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
        alpha = jnp.exp(m - m_new)
        l = alpha * l + jnp.sum(p, axis=-1)
        pv = jnp.einsum(
            "bkgts,bskd->bkgtd",
            p.astype(blk["v"].dtype),
            blk["v"],
            preferred_element_type=jnp.float32,
        )
        return (m_new, l, alpha[..., None] * acc + pv), None

    init = (
        jnp.full((b, hkv, g, t), _NEG, jnp.float32),
        jnp.zeros((b, hkv, g, t), jnp.float32),
        jnp.zeros((b, hkv, g, t, v.shape[-1]), jnp.float32),
    )
    (m, l, acc), _ = jax.lax.scan(body, init, xs)
    l = jnp.where(l > 0, l, 1.0)
    o = acc / l[..., None]
    return jnp.transpose(o, (0, 3, 1, 2, 4)), m + jnp.log(l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _blockwise(qg, k, v, lam, slope, seg, scale, window, block_size):
    """Blockwise attention with a flash-style backward pass (recomputes each key block's
    weights from the saved log-sum-exp; memory O(T·D), never O(T²))."""
    return _flash_forward(qg, k, v, lam, slope, seg, scale, window, block_size)[0]


def _blockwise_fwd(qg, k, v, lam, slope, seg, scale, window, block_size):
    o, lse = _flash_forward(qg, k, v, lam, slope, seg, scale, window, block_size)
    return o, (qg, k, v, lam, slope, seg, o, lse)


def _blockwise_bwd(scale, window, block_size, res, do):
    """With ``P = softmax(logits)``, ``dS = P ⊙ (dP − rowsum(dO ⊙ O))``: dq = scale·dS k,
    dk = scale·dSᵀ q, dv = Pᵀ dO, dΛ_t += Σ_i dS_ti, dΛ_i −= Σ_t dS_ti,
    da_i = Σ_t dS_ti (t − i)."""
    qg, k, v, lam, slope, seg, o, lse = res
    t = qg.shape[1]
    pos, xs = _scan_inputs(qg, k, v, lam, slope, seg, block_size)
    do = do.astype(jnp.float32)
    delta = jnp.transpose(jnp.sum(do * o, axis=-1), (0, 2, 3, 1))  # [B, H_kv, G, T]
    q32 = qg.astype(jnp.float32)

    def body(carry, blk):
        dq, dlam_q = carry
        s, mask = _block_logits(qg, blk, pos, lam, seg, scale, window)
        p = jnp.where(mask, jnp.exp(s - lse[..., None]), 0.0)
        vb, kb = blk["v"].astype(jnp.float32), blk["k"].astype(jnp.float32)
        dv = jnp.einsum("bkgts,btkgd->bskd", p, do)
        ds = p * (jnp.einsum("btkgd,bskd->bkgts", do, vb) - delta[..., None])
        dq = dq + scale * jnp.einsum("bkgts,bskd->btkgd", ds, kb)
        dk = scale * jnp.einsum("bkgts,btkgd->bskd", ds, q32)
        out = {"dk": dk, "dv": dv}
        if lam is not None:
            dlam_q = dlam_q + jnp.sum(ds, axis=-1)
            out["dlam"] = -jnp.transpose(jnp.sum(ds, axis=-2), (0, 3, 1, 2))
        if slope is not None:
            kp = jnp.transpose(blk["pos"], (0, 2, 1))[:, :, None, None, :]
            dt = (pos[:, None, None, :, None] - kp).astype(jnp.float32)
            out["dslope"] = jnp.transpose(jnp.sum(ds * dt, axis=-2), (0, 3, 1, 2))
        return (dq, dlam_q), out

    init = (jnp.zeros(qg.shape, jnp.float32), jnp.zeros(lse.shape, jnp.float32))
    (dq, dlam_q), outs = jax.lax.scan(body, init, xs)
    dlam = dslope = None
    if lam is not None:
        dlam = _unblock(outs["dlam"], t) + jnp.transpose(dlam_q, (0, 3, 1, 2))
    if slope is not None:
        dslope = _unblock(outs["dslope"], t)
    return (
        dq.astype(qg.dtype),
        _unblock(outs["dk"], t).astype(k.dtype),
        _unblock(outs["dv"], t).astype(v.dtype),
        dlam,
        dslope,
        None,
    )


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)


def decay_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    log_fgate: jax.Array | None = None,
    key_slope: jax.Array | None = None,
    *,
    scale: float | None = None,
    window: int | None = None,
    segment_ids: jax.Array | None = None,
    impl: str = "auto",
    block_size: int = 64,
) -> jax.Array:
    """Causal softmax attention with the bias ``Λ_t − Λ_i + (t − i)·a_i`` (module docstring).

    Args:
      q: ``[B, T, H, D]``. k: ``[B, T, H_kv, D]``. v: ``[B, T, H_kv, V]`` (one float dtype).
      log_fgate: log forget gate ``log f_t ≤ 0``, ``[B, T, H]`` or ``[B, T, H_kv]``; Λ is its
        cumulative sum over the sequence (float32). None = no forget gate.
      key_slope: per-key log-retention slope ``a_i`` (``log β_i`` for TRIM-KV, ``−m_h`` for
        ALiBi), ``[B, T, H]`` or ``[B, T, H_kv]``. None = no slope.
      scale: query scale, ``D ** -0.5`` by default.
      window: keys each query sees, itself included; None = all earlier keys.
      segment_ids: int ``[B, T]``; queries see only keys of their own segment.
      impl: ``"auto"`` (``"pallas"`` on GPU/TPU, else ``"chunk"``), ``"pallas"``, ``"chunk"``
        (blockwise) or ``"naive"``.
      block_size: keys per block for ``"chunk"``; query and key block of ``"pallas"``
        (rounded up to a multiple of 128 on TPU, a power of two on GPU).

    Returns:
      o ``[B, T, H, V]`` in q's dtype (no recurrent state: the KV cache is the state).
    """
    b, t, h, hkv, d = _check_inputs(q, k, v)
    lam = _per_head("log_fgate", log_fgate, b, t, h, hkv)
    slope = _per_head("key_slope", key_slope, b, t, h, hkv)
    if lam is not None:
        lam = jnp.cumsum(lam, axis=1)
    _checks.check_segment_ids(segment_ids, q)
    _checks.check_chunk_size(block_size)
    check_window(window)
    impl = resolve_impl(impl, flash_kernel, chunk_size=block_size, segment_ids=segment_ids, x=q)
    scale = _checks.resolve_scale(scale, d)
    qg = q.reshape(b, t, hkv, h // hkv, d)
    pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if impl == "naive":
        seg_mask = (
            None if segment_ids is None else segment_ids[:, :, None] == segment_ids[:, None, :]
        )
        o = _naive(qg, k, v, lam, slope, pos, seg_mask, scale, window)
    elif impl == "pallas":
        per_q = lambda x: None if x is None else x.reshape(b, t, h)
        o = flash_kernel.flash_attention(
            q,
            k,
            v,
            per_q(lam),
            per_q(slope),
            segment_ids,
            scale=scale,
            window=window,
            block_q=block_size,
            block_k=block_size,
        )
    else:
        o = _blockwise(qg, k, v, lam, slope, segment_ids, scale, window, block_size)
    return o.reshape(b, t, h, v.shape[-1]).astype(q.dtype)


def decay_attention_cached(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_pos: jax.Array,
    k_pos: jax.Array,
    *,
    q_lam: jax.Array | None = None,
    k_lam: jax.Array | None = None,
    k_slope: jax.Array | None = None,
    scale: float | None = None,
    window: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Attention of new queries over an explicit key set (a decode cache), with the same bias.

    Args:
      q: ``[B, Tq, H, D]``. k: ``[B, S, H_kv, D]``. v: ``[B, S, H_kv, V]``.
      q_pos: int ``[B, Tq]`` absolute positions of the queries.
      k_pos: int ``[B, S, H_kv]`` absolute position of each key slot, −1 for an empty slot
        (per KV head, since eviction may keep different keys in different heads).
      q_lam: Λ of each query ``[B, Tq, H_kv, G]``; k_lam: Λ of each key ``[B, S, H_kv, G]``
        (both or neither). k_slope: ``a_i`` of each key ``[B, S, H_kv, G]`` or None.
      scale: query scale, ``D ** -0.5`` by default. window: as in :func:`decay_attention`.

    Returns:
      (o ``[B, Tq, H, V]`` in q's dtype, attention weights ``[B, H_kv, G, Tq, S]`` float32).
    """
    b, tq, h, d = q.shape
    hkv = k.shape[2]
    if k_pos.shape != k.shape[:3]:
        raise ValueError(f"k_pos must have shape {k.shape[:3]} ([B, S, H_kv]); got {k_pos.shape}")
    if q_pos.shape != (b, tq):
        raise ValueError(f"q_pos must have shape {(b, tq)} ([B, Tq]); got {q_pos.shape}")
    if (q_lam is None) != (k_lam is None):
        raise ValueError("q_lam and k_lam must be given together (or neither)")
    scale = _checks.resolve_scale(scale, d)
    qg = q.reshape(b, tq, hkv, h // hkv, d)
    logits, mask = biased_logits(
        qg,
        k,
        q_pos,
        k_pos,
        scale=scale,
        q_lam=q_lam,
        k_lam=k_lam,
        k_slope=k_slope,
        window=window,
    )
    probs = _masked_softmax(logits, mask)
    o = jnp.einsum(
        "bkgts,bskd->btkgd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
    return o.reshape(b, tq, h, v.shape[-1]).astype(q.dtype), probs
