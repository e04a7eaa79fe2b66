"""Shared engine for the (gated) delta rule: the per-token recurrence and the chunked WY/UT form.

Per head, with key-major state ``S ∈ R^{K×V}`` (fp32), log decay ``g_t ≤ 0`` (0 for the plain
delta rule) and write strength ``β_t``::

    S'  = exp(g_t) S_{t-1}                    # decay first
    u_t = β_t (v_t − S'ᵀ k_t)                  # the delta update reads the decayed state
    S_t = S' + k_t u_tᵀ                        # = exp(g_t)(I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ
    o_t = s · S_tᵀ q_t                         # read after write

Chunked WY/UT form (chunk of C tokens, entering state ``S = S_[n]``, ``γ`` = chunk-local
inclusive cumsum of g, ``Γ_ij = exp(γ_i − γ_j)`` for j ≤ i, masked before the exp)::

    L  = tril(diag(β)(KKᵀ ⊙ Γ), −1)
    W  = (I + L)⁻¹ diag(β ⊙ exp(γ)) K           # how each token reads S       [C, K]
    U  = (I + L)⁻¹ diag(β) V                     # the intra-chunk part of u    [C, V]
    Ṽ  = U − W S                                 # the u_t of every token       [C, V]
    S_[n+1] = exp(γ_C) S + (K ⊙ exp(γ_C − γ))ᵀ Ṽ
    O  = s[(Q ⊙ exp(γ)) S + (QKᵀ ⊙ Γ ⊙ M) Ṽ]     # M causal incl. the diagonal

Every exponent is ≤ 0 (γ is non-increasing), so nothing overflows for any gate strength or
length. ``(I + L)⁻¹`` is applied by one unit-diagonal triangular solve on ``[β exp(γ) K | β V]``.

Packed sequences: a reset (state := 0 before token t) splits a chunk into segments. Only
same-segment pairs interact in ``L`` and ``QKᵀ``, so the triangular system decouples per
segment; only tokens in the segment of the token before the chunk ("carry" tokens) read ``S``
(rows of W and of the inter-chunk term of O); ``S`` survives into the next chunk only if the
chunk's last token is a carry token, and only tokens in the last token's segment write to it.
A reset is never expressed as a log decay of −inf.

Padding up to a multiple of C uses identity steps (g = 0, β = 0, q = k = v = 0).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST

StepFn = Callable[..., tuple[jax.Array, jax.Array]]


def _einsum(spec: str, *xs: jax.Array) -> jax.Array:
    return jnp.einsum(spec, *xs, precision=HIGHEST)


def delta_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    state: jax.Array,
    decay: jax.Array | None,
    scale: float,
) -> tuple[jax.Array, jax.Array]:
    """One token of the (gated) delta rule in fp32.

    q, k ``[B, H, K]``, v ``[B, H, V]``, beta and decay = exp(g) ``[B, H]`` (None: no decay),
    state ``[B, H, K, V]``. Returns (o ``[B, H, V]`` fp32, new state fp32).
    """
    f32 = jnp.float32
    q, k, v, beta = (x.astype(f32) for x in (q, k, v, beta))
    s = state.astype(f32)
    if decay is not None:
        s = decay.astype(f32)[..., None, None] * s
    u = beta[..., None] * (v - _einsum("bhkv,bhk->bhv", s, k))
    s = s + k[..., :, None] * u[..., None, :]
    o = scale * _einsum("bhkv,bhk->bhv", s, q)
    return o, s


def check_step_args(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    state: jax.Array,
    g: jax.Array | None = None,
) -> None:
    """Validates single-token (decode) arguments; raises ValueError naming the argument."""
    if q.ndim != 3:
        raise ValueError(f"q must have shape [B, H, K] (rank 3); got shape {q.shape}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {q.shape} ([B, H, K]); got {k.shape}")
    if v.ndim != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"v must have shape {q.shape[:2]} + (V,) ([B, H, V]); got {v.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise ValueError(f"q, k, v must be floating point; got {q.dtype}")
    named = [("beta", beta)] + ([("g", g)] if g is not None else [])
    for name, x in named:
        if x.shape != q.shape[:2]:
            raise ValueError(f"{name} must have shape {q.shape[:2]} ([B, H]); got {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating point; got {x.dtype}")
    want = (*q.shape, v.shape[-1])
    if state.shape != want:
        raise ValueError(f"state must have shape {want} ([B, H, K, V]); got {state.shape}")


def recurrent_scan(
    step: StepFn,
    xs: tuple[jax.Array, ...],
    state: jax.Array,
    reset: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Runs ``step(*x_t, state) -> (o_t, state)`` over time with ``lax.scan`` (the reference).

    ``xs`` are time-major ``[B, T, ...]`` arrays (moved to ``[T, B, ...]`` here), ``reset``
    ``[B, T]`` bool zeroes the state before token t. Returns (o ``[B, T, ...]``, final state).
    """

    def body(s: jax.Array, inp: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        *x, r = inp
        s = jnp.where(r[:, None, None, None], 0.0, s)
        o, s = step(*x, s)
        return s, o

    xs_t = tuple(jnp.moveaxis(x, 1, 0) for x in (*xs, reset))
    state, o = jax.lax.scan(body, state, xs_t)
    return jnp.moveaxis(o, 0, 1), state


SOLVE = "block"
BLOCK = 16


def _unit_lower_solve(lower: jax.Array, rhs: jax.Array) -> jax.Array:
    """``(I + lower)⁻¹ rhs`` for strictly lower-triangular ``lower`` ``[.., C, C]``."""
    if SOLVE == "trsm":
        return jax.lax.linalg.triangular_solve(
            lower, rhs, left_side=True, lower=True, unit_diagonal=True
        )
    if SOLVE == "dbl":
        return _einsum("...ij,...jk->...ik", _unit_lower_inv(lower), rhs)
    c = lower.shape[-1]
    edges = list(range(0, c, BLOCK)) + [c]
    xs: list[jax.Array] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        r = rhs[..., a:b, :]
        if xs:
            r = r - _einsum("...ij,...jk->...ik", lower[..., a:b, :a], jnp.concatenate(xs, -2))
        xs.append(_einsum("...ij,...jk->...ik", _unit_lower_inv(lower[..., a:b, a:b]), r))
    return jnp.concatenate(xs, axis=-2)


def _unit_lower_inv(lower: jax.Array) -> jax.Array:
    c = lower.shape[-1]
    x = -lower
    inv = jnp.eye(c, dtype=lower.dtype) + x
    for _ in range(max(c - 1, 1).bit_length() - 1):
        x = _einsum("...ij,...jk->...ik", x, x)
        inv = inv + _einsum("...ij,...jk->...ik", inv, x)
    return inv


def _to_chunks(x: jax.Array, n: int, c: int) -> jax.Array:
    """``[B, N·C, H, ...]`` → ``[B, H, N, C, ...]``."""
    b, _, h, *rest = x.shape
    x = x.reshape(b, n, c, h, *rest)
    return jnp.moveaxis(x, 3, 1)


def chunk_delta(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    g: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array,
    reset: jax.Array | None,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Chunked WY/UT (gated) delta rule; all arithmetic in fp32.

    q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, beta, g ``[B, T, H]`` (g None: ungated),
    initial_state ``[B, H, K, V]`` fp32, reset ``[B, T]`` bool or None.
    Returns (o ``[B, T, H, V]`` fp32, final state ``[B, H, K, V]`` fp32).
    """
    f32 = jnp.float32
    bsz, t, h, dk = q.shape
    dv = v.shape[-1]
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = n * c - t

    def prep(x: jax.Array | None) -> jax.Array | None:
        if x is None:
            return None
        x = x.astype(f32)
        if pad:
            x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return _to_chunks(x, n, c)

    # [B, H, N, C, D] and [B, H, N, C]; q carries the scale.
    q, k, v, beta, g = (prep(x) for x in (q * scale, k, v, beta, g))

    # Masks [.., C, C]: causal incl. diagonal, and same-segment; carry/last tokens [.., C].
    causal = jnp.tril(jnp.ones((c, c), dtype=bool))
    if reset is None:
        mask, carry, last = causal, None, None
    else:
        r = jnp.pad(reset, [(0, 0), (0, pad)]).reshape(bsz, 1, n, c)
        seg = jnp.cumsum(r.astype(jnp.int32), axis=-1)  # resets so far inside the chunk
        mask = causal & (seg[..., :, None] == seg[..., None, :])
        carry = seg == 0  # in the segment of the token before the chunk
        last = seg == seg[..., -1:]  # in the segment of the chunk's last token
    strict = mask & ~jnp.eye(c, dtype=bool)

    def masked(x: jax.Array, m: jax.Array | None) -> jax.Array:
        return x if m is None else jnp.where(m, x, 0.0)

    qk = _einsum("bhncd,bhnjd->bhncj", q, k)
    kk = _einsum("bhncd,bhnjd->bhncj", k, k)
    if g is None:
        gam_q = gam_k = masked(jnp.ones_like(beta), carry)  # exp(γ) on carry tokens
        gam_last = masked(jnp.ones_like(beta), last)  # exp(γ_C − γ) on last-segment tokens
        decay = jnp.ones_like(beta[..., 0]) if carry is None else carry[..., -1].astype(f32)
    else:
        gam = jnp.cumsum(g, axis=-1)  # γ, chunk-local inclusive cumsum
        diff = gam[..., :, None] - gam[..., None, :]
        big_gamma = jnp.exp(jnp.where(mask, diff, 0.0))  # masked before the exp: all ≤ 1
        gam_q = gam_k = masked(jnp.exp(gam), carry)
        gam_last = masked(jnp.exp(gam[..., -1:] - gam), last)
        decay = jnp.exp(gam[..., -1]) * (1.0 if carry is None else carry[..., -1])
        kk = kk * big_gamma
        qk = qk * big_gamma

    lower = jnp.where(strict, beta[..., :, None] * kk, 0.0)
    rhs = jnp.concatenate([(beta * gam_k)[..., None] * k, beta[..., None] * v], axis=-1)
    wu = _unit_lower_solve(lower, rhs)
    w, u = wu[..., :dk], wu[..., dk:]
    attn = jnp.where(mask, qk, 0.0)
    q_in = gam_q[..., None] * q  # reads S
    k_out = gam_last[..., None] * k  # writes to the next S

    def body(s: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        w_n, u_n, k_n, d_n = xs
        v_new = u_n - _einsum("bhck,bhkv->bhcv", w_n, s)
        s_next = d_n[..., None, None] * s + _einsum("bhck,bhcv->bhkv", k_n, v_new)
        return s_next, (s, v_new)

    scan_in = tuple(jnp.moveaxis(x, 2, 0) for x in (w, u, k_out, decay))
    final, (states, v_new) = jax.lax.scan(body, initial_state.astype(f32), scan_in)
    states, v_new = jnp.moveaxis(states, 0, 2), jnp.moveaxis(v_new, 0, 2)

    o = _einsum("bhnck,bhnkv->bhncv", q_in, states) + _einsum("bhncj,bhnjv->bhncv", attn, v_new)
    o = jnp.moveaxis(o, 1, 3).reshape(bsz, n * c, h, dv)[:, :t]
    return o, final
