"""Shared engine for linear recurrences with scalar or diagonal decay.

Per batch row and head, with key-major state ``S ∈ R^{K×V}`` and log-decay ``g ≤ 0``::

    S_t = Diag(exp(g_t)) S_{t-1} + k_t v_tᵀ        o_t = scale · S_tᵀ q_t

``g`` is absent (linear attention: no decay), per head (``[B, T, H]``: RetNet / Mamba-2 style
scalar decay) or per key channel (``[B, T, H, K]``: GLA). Where a new packed segment starts the
state is reset to zero before the token is written.

Two implementations live here and are wrapped by :mod:`memarch.ops.linear_attention` and
:mod:`memarch.ops.gla`:

* :func:`scan_tokens` runs a per-token step function with ``lax.scan`` (the fp32 specification);
* :func:`chunk_decay` is the chunked form of ``shared/reference/linear_attention.md`` §3. Within a
  chunk of ``C`` tokens, with ``b`` the chunk-local inclusive cumsum of ``g`` and ``b_C`` its last
  row, and ``S_[n]`` the state entering chunk ``n``::

      S_[n+1] = Diag(exp(b_C)) S_[n] + (K ⊙ exp(b_C − b))ᵀ V
      O       = (Q ⊙ exp(b)) S_[n] + (A ⊙ M) V,   A_ij = Σ_d q_id k_jd exp(b_id − b_jd)

  The chunk states come from a sequential ``lax.scan`` over chunks; everything else is computed
  for all chunks at once. Every exponent is re-based to be ≤ 0 and masked before ``exp``.
  Segment resets are masks, never a log-decay of −inf.

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; state ``[B, H, K, V]`` float32; o
``[B, T, H, V]`` in q's dtype. All arithmetic is float32.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST
SUB_CHUNK = 16  # rows per diagonal block of the per-channel intra-chunk scores

StepFn = Callable[..., tuple[jax.Array, jax.Array]]


def _einsum(spec: str, *operands: jax.Array) -> jax.Array:
    return jnp.einsum(spec, *operands, precision=HIGHEST)


def _masked_exp(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``exp(x)`` where the 0/1 float ``mask`` is 1, else 0. The exponent is masked before the
    exp (``x · 0 = 0``), so masked entries never produce inf, and inf·0 = NaN cannot occur."""
    return jnp.exp(x * mask) * mask


def check_step_inputs(
    q: jax.Array, k: jax.Array, v: jax.Array, state: jax.Array, g: jax.Array | None = None
) -> None:
    """Checks single-token inputs: q, k ``[B, H, K]``, v ``[B, H, V]``, g ``[B, H]`` or
    ``[B, H, K]``, state ``[B, H, K, V]``."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 3:
            raise ValueError(f"{name} must have shape [B, H, D] (rank 3); got shape {x.shape}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {q.shape} ([B, H, K]); got {k.shape}")
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(f"v must have shape [B, H, V] = {q.shape[:2]} + (V,); got {v.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if g is not None and g.shape not in (q.shape[:2], q.shape):
        raise ValueError(
            f"g must have shape {q.shape[:2]} ([B, H]) or {q.shape} ([B, H, K]); got {g.shape}"
        )
    want = (*q.shape, v.shape[-1])
    if state.shape != want:
        raise ValueError(f"state must have shape {want} ([B, H, K, V]); got {state.shape}")


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


def scan_tokens(
    step: StepFn,
    inputs: tuple[jax.Array, ...],
    initial_state: jax.Array | None,
    starts: jax.Array,
    out_dtype: jnp.dtype,
) -> tuple[jax.Array, jax.Array]:
    """The naive form: a float32 ``lax.scan`` over tokens calling ``step(*inputs_t, state)``.

    ``inputs`` are ``[B, T, ...]`` arrays, ``starts`` is bool ``[B, T]`` (reset before the
    token), the first input is q and the third is v. Returns (o ``[B, T, H, V]``, final state).
    """
    q, v = inputs[0], inputs[2]
    b, _, h, dk = q.shape
    s0 = jnp.zeros((b, h, dk, v.shape[-1]), jnp.float32)
    if initial_state is not None:
        s0 = initial_state.astype(jnp.float32)
    xs = tuple(jnp.swapaxes(x.astype(jnp.float32), 0, 1) for x in inputs)

    def body(s, xs_t):
        *x_t, start = xs_t
        s = jnp.where(start[:, None, None, None], 0.0, s)
        o, s = step(*x_t, s)
        return s, o

    s_final, o = jax.lax.scan(body, s0, (*xs, starts.T))
    return jnp.swapaxes(o, 0, 1).astype(out_dtype), s_final


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _pad_time(x: jax.Array, pad: int, mode: str = "constant") -> jax.Array:
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, pad)
    return jnp.pad(x, widths, mode=mode) if pad else x


def _to_chunks(x: jax.Array, n: int, c: int) -> jax.Array:
    """``[B, N·C, H, ...]`` → ``[B, H, N, C, ...]``."""
    x = x.reshape(x.shape[0], n, c, *x.shape[2:])
    return jnp.moveaxis(x, 3, 1)


def _tril_decay(b: jax.Array) -> jax.Array:
    """``[..., L, K]`` → ``[..., L, L, K]``: ``exp(b_i − b_j)`` for j ≤ i, else 0 (masked before
    the exp, so every exponent used is ≤ 0)."""
    tri = np.tril(np.ones(b.shape[-2:-1] * 2, np.float32))[..., None]
    return _masked_exp(b[..., :, None, :] - b[..., None, :, :], tri)


def _sub_chunk(c_len: int) -> int:
    """Rows per diagonal block: the largest divisor of the chunk length that is ≤ SUB_CHUNK."""
    return max(d for d in range(1, min(SUB_CHUNK, c_len) + 1) if c_len % d == 0)


def _off_diag_scores(q: jax.Array, k: jax.Array, b: jax.Array, sub: int) -> jax.Array:
    """Scores of keys in earlier sub-chunks, ``[..., P, L, C]`` (zero elsewhere).

    The first row ``c`` of query sub-chunk p is the reference: ``(q ⊙ exp(b − c))`` times
    ``(k ⊙ exp(c − b))ᵀ`` over key rows before the sub-chunk; both exponents are ≤ 0.
    """
    c_len, dk = q.shape[-2:]
    p = c_len // sub
    qs, bs = (x.reshape(*x.shape[:-2], p, sub, dk) for x in (q, b))
    ref = bs[..., :, :1, :]  # [..., P, 1, K]
    before = (np.arange(c_len)[None, :] < sub * np.arange(p)[:, None]).astype(np.float32)
    k_ref = k[..., None, :, :] * _masked_exp(ref - b[..., None, :, :], before[..., None])
    return _einsum("...pik,...pjk->...pij", qs * jnp.exp(bs - ref), k_ref)


@jax.custom_vjp
def _channel_scores(q: jax.Array, k: jax.Array, b: jax.Array) -> jax.Array:
    """``A_ij = Σ_d q_id k_jd exp(b_id − b_jd)`` for j ≤ i, per chunk, with per-channel ``b``.

    q, k, b are ``[..., C, K]``; returns ``[..., C, C]``. Query rows are split in sub-chunks of
    L rows: blocks left of the diagonal are matmuls (:func:`_off_diag_scores`); diagonal L×L
    blocks use the element-wise ``exp(b_i − b_j)``, masked to j ≤ i before the exp.
    """
    c_len, dk = q.shape[-2:]
    sub = _sub_chunk(c_len)
    p = c_len // sub
    qs, ks, bs = (x.reshape(*x.shape[:-2], p, sub, dk) for x in (q, k, b))
    diag = jnp.sum(qs[..., :, None, :] * ks[..., None, :, :] * _tril_decay(bs), axis=-1)
    scores = diag[..., :, :, None, :] * np.eye(p, dtype=np.float32)[:, None, :, None]
    if p > 1:
        scores = scores + _off_diag_scores(q, k, b, sub).reshape(scores.shape)
    return scores.reshape(*q.shape[:-2], c_len, c_len)


def _channel_scores_fwd(q, k, b):
    return _channel_scores(q, k, b), (q, k, b)


def _channel_scores_bwd(res, da):
    # A depends on b only through b_i − b_j, so db = q ⊙ dq − k ⊙ dk: the backward only needs
    # dq and dk, never derivatives of the exps.
    q, k, b = res
    c_len, dk_ = q.shape[-2:]
    sub = _sub_chunk(c_len)
    p = c_len // sub
    split = lambda x: x.reshape(*x.shape[:-2], p, sub, x.shape[-1])
    qs, ks, bs = split(q), split(k), split(b)
    da4 = da.reshape(*da.shape[:-2], p, sub, p, sub)
    da_diag = jnp.einsum("...pipj->...pij", da4)  # [..., P, L, L]
    # Diagonal blocks: dq_i = Σ_j dA_ij k_j ⊙ exp(b_i − b_j), dk_j = Σ_i dA_ij q_i ⊙ exp(..),
    # as L unrolled [..., L, K] terms so XLA emits vectorised loops instead of [L, L, K] products.
    tri = np.tril(np.ones((sub, sub), np.float32))
    dq = dk = jnp.zeros_like(qs)
    for j in range(sub):
        w_q = _masked_exp(bs - bs[..., j, None, :], tri[:, j, None])  # query rows i ≥ j
        dq = dq + da_diag[..., :, j, None] * ks[..., j, None, :] * w_q
        w_k = _masked_exp(bs[..., j, None, :] - bs, tri[j, :, None])  # key rows ≤ j
        dk = dk + da_diag[..., j, :, None] * qs[..., j, None, :] * w_k
    dq, dk = dq.reshape(q.shape), dk.reshape(k.shape)
    if p > 1:  # the off-diagonal part is linear in (q, k) for fixed b
        _, vjp = jax.vjp(lambda q_, k_: _off_diag_scores(q_, k_, b, sub), q, k)
        dq_off, dk_off = vjp(da.reshape(*da.shape[:-2], p, sub, c_len))
        dq, dk = dq + dq_off, dk + dk_off
    return dq, dk, q * dq - k * dk


_channel_scores.defvjp(_channel_scores_fwd, _channel_scores_bwd)


def chunk_decay(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array | None,
    starts: jax.Array,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Chunked form of the decay recurrence; returns (o ``[B, T, H, V]``, final state).

    ``g`` is None, ``[B, T, H]`` or ``[B, T, H, K]`` (log decay); ``starts`` is bool ``[B, T]``.
    T is padded to a multiple of the chunk size with identity steps (g = 0, k = v = 0).
    """
    bsz, t, h, dk = q.shape
    dv = v.shape[-1]
    c = min(chunk_size, _round_up(t, SUB_CHUNK))
    n = -(-t // c)
    pad = n * c - t
    f32 = jnp.float32

    # Segment masks, [B, 1, N, ...] to broadcast over heads. seg is a monotone segment index
    # per token (padding repeats the last one); prev is the segment of the token before the chunk.
    seg = _pad_time(jnp.cumsum(starts, axis=1, dtype=jnp.int32), pad, mode="edge")
    seg = seg.reshape(bsz, 1, n, c)
    prev = jnp.concatenate([jnp.zeros_like(seg[:, :, :1, -1]), seg[:, :, :-1, -1]], axis=-1)
    last = seg[..., -1]
    causal = np.tril(np.ones((c, c), bool))
    intra = (causal & (seg[..., :, None] == seg[..., None, :])).astype(f32)  # [B,1,N,C,C]
    reads_state = (seg == prev[..., None]).astype(f32)[..., None]  # token reads S_[n]
    writes_state = (seg == last[..., None]).astype(f32)[..., None]  # token writes S_[n+1]
    carries = (last == prev).astype(f32)  # S_[n] survives into S_[n+1]

    qc, kc, vc = (_to_chunks(_pad_time(x.astype(f32), pad), n, c) for x in (q, k, v))
    qc = qc * scale  # [B, H, N, C, K]
    if g is None:
        q_in, k_out, decay = qc, kc, jnp.ones((bsz, h, n, 1, 1), f32)
        scores = _einsum("bhnik,bhnjk->bhnij", qc, kc) * intra
    else:
        gc = _to_chunks(_pad_time(g.astype(f32), pad), n, c)
        per_channel = g.ndim == 4
        b = jnp.cumsum(gc if per_channel else gc[..., None], axis=-2)  # [B,H,N,C,K or 1]
        b_last = b[..., -1:, :]
        q_in = qc * jnp.exp(b)
        k_out = kc * jnp.exp(b_last - b)
        decay = jnp.exp(b_last[..., 0, :])[..., None]  # [B, H, N, K or 1, 1]
        if per_channel:
            scores = _channel_scores(qc, kc, b) * intra
        else:
            gamma = _masked_exp(b[..., :, None, 0] - b[..., None, :, 0], intra)
            scores = _einsum("bhnik,bhnjk->bhnij", qc, kc) * gamma

    # Inter-chunk state pass: sequential over chunks, only [B, H, K, V] work per step.
    updates = _einsum("bhnck,bhncv->nbhkv", k_out * writes_state, vc)
    keep = jnp.moveaxis(decay * carries[..., None, None], 2, 0)  # [N, B, H, K or 1, 1]
    s0 = jnp.zeros((bsz, h, dk, dv), f32)
    if initial_state is not None:
        s0 = initial_state.astype(f32)

    def state_pass(s, xs):
        update, keep_n = xs
        return keep_n * s + update, s

    s_final, states = jax.lax.scan(state_pass, s0, (updates, keep))

    # Output pass, parallel over chunks.
    o = _einsum("bhnck,nbhkv->bhncv", q_in * reads_state, states)
    o = o + _einsum("bhnij,bhnjv->bhniv", scores, vc)
    o = jnp.moveaxis(o, 1, 3).reshape(bsz, n * c, h, dv)[:, :t]
    return o.astype(q.dtype), s_final
