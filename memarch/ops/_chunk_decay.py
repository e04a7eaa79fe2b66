"""Shared engine for linear recurrences with scalar or diagonal decay.

Per batch row and head, with key-major state ``S ∈ R^{K×V}`` and log-decay ``g ≤ 0``::

    S_t = Diag(exp(g_t)) S_{t-1} + k_t v_tᵀ        o_t = scale · S_tᵀ q_t

``g`` is absent (linear attention: no decay), per head (``[B, T, H]``: RetNet / Mamba-2 style
scalar decay) or per key channel (``[B, T, H, K]``: GLA). Where a new packed segment starts the
state is reset to zero before the token is written.

Two pieces live here and are wrapped by :func:`memarch.ops.gla` (and so by
:func:`memarch.ops.linear_attention`, its ungated case):

* :func:`decay_step` is one token (the naive form scans it, :func:`memarch.ops._scan.scan_tokens`);
* :func:`chunk_decay` is the chunked form of ``docs/linear_attention.md`` §Chunked form. Within a
  chunk of ``C`` tokens, with ``b`` the chunk-local inclusive cumsum of ``g`` and ``b_C`` its last
  row, and ``S_[n]`` the state entering chunk ``n``::

      S_[n+1] = Diag(exp(b_C)) S_[n] + (K ⊙ exp(b_C − b))ᵀ V
      O       = (Q ⊙ exp(b)) S_[n] + (A ⊙ M) V,   A_ij = Σ_d q_id k_jd exp(b_id − b_jd)

  The chunk states come from a sequential ``lax.scan`` over chunks; everything else is computed
  for all chunks at once, with fp32 matmuls at ``Precision.HIGHEST``. Every exponent is re-based
  to be ≤ 0 and masked before ``exp``; segment resets are masks, never a log-decay of −inf.
  For a scalar gate ``A = (Q Kᵀ) ⊙ exp(b_i − b_j)``. For a per-channel gate ``A`` is built by
  :func:`_tree_scores`: log2(C) levels of matmuls that each use a reference row, instead of the
  element-wise ``[16, 16, K]`` diagonal blocks of FLA, which dominate the run time on XLA:CPU;
  its backward uses ``db = q ⊙ dq − k ⊙ dk`` rather than differentiating the exps.

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; state ``[B, H, K, V]`` float32; o
``[B, T, H, V]`` in q's dtype. All arithmetic is float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST
MIN_CHUNK = 16  # short inputs use chunks of round_up(T, MIN_CHUNK) when that is below chunk_size


def _einsum(spec: str, *operands: jax.Array) -> jax.Array:
    return jnp.einsum(spec, *operands, precision=HIGHEST)


def _masked_exp(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``exp(x)`` where the 0/1 float ``mask`` is 1, else 0. The exponent is masked before the
    exp (``x · 0 = 0``), so masked entries never produce inf, and inf·0 = NaN cannot occur."""
    return jnp.exp(x * mask) * mask


def decay_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array | None,
    state: jax.Array,
    scale: float,
) -> tuple[jax.Array, jax.Array]:
    """One token: ``S ← Diag(exp(g)) S + k vᵀ``, ``o = scale · Sᵀ q``; returns (o, S) with o in
    q's dtype and S float32. ``g`` is None (no decay), ``[B, H]`` or ``[B, H, K]``."""
    s = state.astype(jnp.float32)
    if g is not None:
        g = g.astype(jnp.float32)
        decay = jnp.exp(g)[..., None, None] if g.ndim == 2 else jnp.exp(g)[..., None]
        s = decay * s
    kf, vf = k.astype(jnp.float32), v.astype(jnp.float32)
    s = s + kf[..., :, None] * vf[..., None, :]
    o = scale * _einsum("bhkv,bhk->bhv", s, q.astype(jnp.float32))
    return o.astype(q.dtype), s


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _pad_time(x: jax.Array, pad: int, mode: str = "constant") -> jax.Array:
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, pad)
    return jnp.pad(x, widths, mode=mode) if pad else x


def _to_chunks(x: jax.Array, n: int, c: int) -> jax.Array:
    """``[B, N·C, H, ...]`` → ``[N, B, H, C, ...]`` (chunk axis first, as the state scan needs)."""
    x = x.reshape(x.shape[0], n, c, *x.shape[2:])
    return jnp.moveaxis(x, (1, 3), (0, 2))


def _base_blocks(q: jax.Array, k: jax.Array, b: jax.Array) -> jax.Array:
    """``[..., L, K]`` → ``[..., L, L]``: ``Σ_d q_id k_jd exp(b_id − b_jd)`` for j ≤ i, else 0.

    Element-wise in fp32; the exponent is masked (multiplied by 0) before the exp, so every
    exponent used is ≤ 0. For L = 1 this is just q·k.
    """
    if q.shape[-2] == 1:
        return jnp.sum(q * k, axis=-1, keepdims=True)
    tri = np.tril(np.ones((b.shape[-2],) * 2, np.float32))[..., None]
    decay = _masked_exp(b[..., :, None, :] - b[..., None, :, :], tri)
    return jnp.sum(q[..., :, None, :] * k[..., None, :, :] * decay, axis=-1)


def _tree_scores(q: jax.Array, k: jax.Array, b: jax.Array) -> jax.Array:
    """Per-chunk scores ``A_ij = Σ_d q_id k_jd exp(b_id − b_jd)``, j ≤ i, from ``[..., C, K]``.

    Bottom-up over block sizes: base blocks of L rows (L = the odd part of C, so L = 1 for the
    usual power-of-two chunks) are element-wise (:func:`_base_blocks`). Then two neighbouring
    blocks F (earlier rows, keys) and S (later rows, queries) of h rows are merged into one of 2h
    rows, ``[[A_F, 0], [X, A_S]]``, where the cross block uses the first row ``c`` of S as
    reference: ``X = (q_S ⊙ exp(b_S − c)) (k_F ⊙ exp(c − b_F))ᵀ``, a plain matmul with both
    exponents ≤ 0 (b is non-increasing). Each row takes part in log2(C/L) merges.
    """
    c_len, dk = q.shape[-2:]
    lead = q.shape[:-2]
    base = c_len // (c_len & -c_len)  # the odd part of C
    split = lambda x: x.reshape(*lead, c_len // base, base, dk)
    scores = _base_blocks(split(q), split(k), split(b))  # [..., C/L, L, L]
    h = base
    while h < c_len:
        m = c_len // (2 * h)
        qs, ks, bs = (x.reshape(*lead, m, 2, h, dk) for x in (q, k, b))
        ref = bs[..., 1, :1, :]  # [..., m, 1, K]
        q_hat = qs[..., 1, :, :] * jnp.exp(bs[..., 1, :, :] - ref)
        k_hat = ks[..., 0, :, :] * jnp.exp(ref - bs[..., 0, :, :])
        cross = _einsum("...mik,...mjk->...mij", q_hat, k_hat)  # [..., m, h, h]
        pairs = scores.reshape(*lead, m, 2, h, h)
        top = jnp.concatenate([pairs[..., 0, :, :], jnp.zeros_like(cross)], axis=-1)
        bottom = jnp.concatenate([cross, pairs[..., 1, :, :]], axis=-1)
        scores = jnp.concatenate([top, bottom], axis=-2)  # [..., m, 2h, 2h]
        h *= 2
    return scores.reshape(*lead, c_len, c_len)


@jax.custom_vjp
def _channel_scores(q: jax.Array, k: jax.Array, b: jax.Array) -> jax.Array:
    """Per-chunk scores with a per-channel gate, :func:`_tree_scores`, with a custom backward:
    A depends on b only through b_i − b_j, so ``db = q ⊙ dq − k ⊙ dk`` and only the (linear, for
    fixed b) dependence on q and k is differentiated — never the exps."""
    return _tree_scores(q, k, b)


def _channel_scores_fwd(q, k, b):
    return _tree_scores(q, k, b), (q, k, b)


def _channel_scores_bwd(res, da):
    q, k, b = res
    _, vjp = jax.vjp(lambda q_, k_: _tree_scores(q_, k_, b), q, k)
    dq, dk = vjp(da)
    return dq, dk, q * dq - k * dk


_channel_scores.defvjp(_channel_scores_fwd, _channel_scores_bwd)


def _segment_masks(starts: jax.Array, n: int, c: int, pad: int) -> tuple[jax.Array, ...]:
    """0/1 float masks for packed segments, ``[N, B, 1, ...]`` (broadcast over heads).

    Returns (intra ``[.., C, C]``: causal and same segment; reads ``[.., C, 1]``: the token is in
    the segment of the token before the chunk, so it reads S_[n]; writes ``[.., C, 1]``: the
    token is in the segment of the chunk's last token, so it contributes to S_[n+1]; carries
    ``[N, B, 1]``: S_[n] survives into S_[n+1]).
    """
    # A monotone segment index per token; padding repeats the last token's segment.
    seg = _pad_time(jnp.cumsum(starts, axis=1, dtype=jnp.int32), pad, mode="edge")
    seg = jnp.moveaxis(seg.reshape(seg.shape[0], 1, n, c), 2, 0)  # [N, B, 1, C]
    last = seg[..., -1]
    prev = jnp.concatenate([jnp.zeros_like(last[:1]), last[:-1]], axis=0)
    causal = np.tril(np.ones((c, c), bool))
    intra = causal & (seg[..., :, None] == seg[..., None, :])
    reads = (seg == prev[..., None])[..., None]
    writes = (seg == last[..., None])[..., None]
    return tuple(x.astype(jnp.float32) for x in (intra, reads, writes, last == prev))


def chunk_decay(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array | None,
    initial_state: jax.Array | None,
    starts: jax.Array | None,
    *,
    scale: float,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Chunked form of the decay recurrence; returns (o ``[B, T, H, V]``, final state).

    ``g`` is None, ``[B, T, H]`` or ``[B, T, H, K]`` (log decay); ``starts`` is None (one
    sequence per row) or bool ``[B, T]``, True where a new segment starts. T is padded to a
    multiple of the chunk size with identity steps (g = 0, k = v = 0).
    """
    bsz, t, h, dk = q.shape
    dv = v.shape[-1]
    c = min(chunk_size, _round_up(t, MIN_CHUNK))
    n = -(-t // c)
    pad = n * c - t
    f32 = jnp.float32
    causal = np.tril(np.ones((c, c), np.float32))
    if starts is None:
        intra, reads, writes, carries = causal, 1.0, 1.0, 1.0
    else:
        intra, reads, writes, carries = _segment_masks(starts, n, c, pad)
        carries = carries[..., None, None]

    qc, kc, vc = (_to_chunks(_pad_time(x.astype(f32), pad), n, c) for x in (q, k, v))
    qc = qc * scale  # [N, B, H, C, K]
    if g is None:
        q_in, k_out, decay = qc, kc, 1.0
        scores = _einsum("nbhik,nbhjk->nbhij", qc, kc) * intra
    else:
        gc = _to_chunks(_pad_time(g.astype(f32), pad), n, c)
        per_channel = g.ndim == 4
        # Chunk-local inclusive cumsum as a matmul with a triangular ones matrix (XLA's CPU
        # cumsum is a slow reduce-window).
        b = _einsum("ij,...jk->...ik", causal, gc if per_channel else gc[..., None])
        b = jax.lax.optimization_barrier(b)  # materialise once, not inside each consumer
        b_last = b[..., -1:, :]
        q_in = qc * jnp.exp(b)
        k_out = kc * jnp.exp(b_last - b)
        decay = jnp.exp(b_last[..., 0, :])[..., None]  # Diag(exp(b_C)): [N, B, H, K or 1, 1]
        if per_channel:
            scores = _channel_scores(qc, kc, b) * intra
        else:
            gamma = _masked_exp(b[..., :, None, 0] - b[..., None, :, 0], intra)
            scores = _einsum("nbhik,nbhjk->nbhij", qc, kc) * gamma

    # Inter-chunk state pass: sequential over chunks, only [B, H, K, V] work per step.
    updates = _einsum("nbhck,nbhcv->nbhkv", k_out * writes, vc)
    keep = decay * carries  # factor on S_[n] in S_[n+1]; 1.0 for plain linear attention
    keep = None if isinstance(keep, float) else jnp.broadcast_to(keep, (n, bsz, h, *keep.shape[3:]))
    s0 = jnp.zeros((bsz, h, dk, dv), f32)
    if initial_state is not None:
        s0 = initial_state.astype(f32)

    def state_pass(s, xs):
        update, keep_n = xs
        return (s if keep_n is None else keep_n * s) + update, s

    s_final, states = jax.lax.scan(state_pass, s0, (updates, keep))

    # Output pass, parallel over chunks.
    o = _einsum("nbhck,nbhkv->nbhcv", q_in * reads, states)
    o = o + _einsum("nbhij,nbhjv->nbhiv", scores, vc)
    o = jnp.moveaxis(o, (0, 2), (1, 3)).reshape(bsz, n * c, h, dv)[:, :t]
    return o.astype(q.dtype), s_final
