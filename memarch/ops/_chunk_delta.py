"""Shared engine for the (gated) delta rule: the per-token recurrence and the chunked WY/UT form.

Per head, with key-major state ``S ∈ R^{K×V}`` (fp32), log decay ``g_t ≤ 0`` (absent for the
plain delta rule) and write strength ``β_t``::

    S'  = exp(g_t) S_{t-1}                     # decay first
    u_t = β_t (v_t − S'ᵀ k_t)                  # the delta update reads the decayed state
    S_t = S' + k_t u_tᵀ                        # = exp(g_t)(I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ
    o_t = s · S_tᵀ q_t                         # read after write

Chunked WY/UT form, per chunk of C tokens entering with state ``S = S_[n]``. γ is the chunk-local
inclusive cumsum of g and ``Γ_ij = exp(γ_i − γ_j)`` for j ≤ i (masked *before* the exp); M is
the causal mask including the diagonal::

    L  = tril(diag(β)(KKᵀ ⊙ Γ), −1)
    W  = (I + L)⁻¹ diag(β ⊙ exp(γ)) K            # how each token reads S        [C, K]
    U  = (I + L)⁻¹ diag(β) V                      # intra-chunk part of u         [C, V]
    Ṽ  = U − W S                                  # u_t of every token            [C, V]
    S_[n+1] = exp(γ_C) S + (K ⊙ exp(γ_C − γ))ᵀ Ṽ
    O  = s[(Q ⊙ exp(γ)) S + (QKᵀ ⊙ Γ ⊙ M) Ṽ]

Every exponent is ≤ 0 (γ is non-increasing inside a chunk), so nothing overflows for any gate
strength or sequence length. Ungated (plain delta rule): γ = 0, Γ = 1.

``(I + L)⁻¹`` is applied by block forward substitution: the 16×16 diagonal blocks (the whole
chunk when C is not a multiple of 16) are inverted by small triangular solves, the off-diagonal
blocks are eliminated block row by block row with matmuls (one big batched triangular solve is
far slower in XLA on CPU; the matmul-only doubling product is less accurate, see
``_unit_lower_inverse``). Its gradient is written by hand: ``dR = (I + L)⁻ᵀ dX`` (block back
substitution) and ``dL = −tril(dR Xᵀ, −1)``.

Layout and loop (tuned for CPU): the ``[B, T, H, ·]`` inputs are only reshaped (no transpose)
to ``[B, N/G, G, C, H, ·]`` and a loop walks the groups of G consecutive chunks. Per group the
state-independent work (QKᵀ, KKᵀ, Γ, the solve) is batched over the G chunks, the state passes
through them in order, and the outputs are batched again, so a group's working set stays in
cache. The loop's gradient is hand-written (``_scan_groups``): the forward pass stores only the
group-entry states; the backward pass walks the groups in reverse, recomputes each group and
applies its VJP (rematerialisation). Reverse-mode autodiff only (no ``jax.jvp`` through it).

Packed sequences: a reset (state := 0 before token t) splits a chunk into segments. Only
same-segment pairs interact in ``L`` and ``QKᵀ`` (the triangular system decouples per segment);
only tokens in the segment of the token before the chunk ("carry" tokens) read ``S`` (rows of W
and the inter-chunk term of O); ``S`` survives into the next chunk only if the chunk's last token
is a carry token, and only tokens in the last token's segment write to it. A reset is never
expressed as a log decay of −inf. Padding up to a multiple of C uses identity steps
(g = 0, β = 0, q = k = v = 0).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST
SOLVE_BLOCK = 16  # diagonal block size of the triangular solve
CHUNKS_PER_STEP = 8  # chunks per group (one step of the loop over the sequence)


def _einsum(spec: str, *xs: jax.Array) -> jax.Array:
    return jnp.einsum(spec, *xs, precision=HIGHEST)


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    return _einsum("...ij,...jk->...ik", a, b)


def _tmm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``aᵀ b`` over the last two axes."""
    return _einsum("...ji,...jk->...ik", a, b)


def _tril(n: int, k: int = 0) -> jax.Array:
    return jnp.tril(jnp.ones((n, n), dtype=bool), k)


# ----------------------------------------------------------------------------------------------
# Per-token recurrence (the specification; the naive form scans it, ops/_scan.py).


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


# ----------------------------------------------------------------------------------------------
# Unit lower-triangular solve (I + L)⁻¹ R with a hand-written gradient.


def _diag_blocks(lower: jax.Array, b: int) -> jax.Array:
    """Diagonal ``b×b`` blocks of ``[.., C, C]`` as ``[.., C/b, b, b]``."""
    nb = lower.shape[-1] // b
    return jnp.stack([lower[..., p * b : (p + 1) * b, p * b : (p + 1) * b] for p in range(nb)], -3)


def _unit_lower_inverse(lower: jax.Array) -> jax.Array:
    """``(I + L)⁻¹`` of strictly lower ``[.., b, b]`` blocks by forward substitution.

    Not the matmul-only doubling product Π_i (I + (−L)^{2^i}): its powers of L grow large and
    cancel, which cost ~3 digits in fp32 with β ≈ 2 and near-parallel keys.
    """
    eye = jnp.broadcast_to(jnp.eye(lower.shape[-1], dtype=lower.dtype), lower.shape)
    return jax.lax.linalg.triangular_solve(
        lower, eye, left_side=True, lower=True, unit_diagonal=True
    )


def _cat(xs: list[jax.Array]) -> jax.Array:
    return xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=-2)


def _forward_subst(lower: jax.Array, dinv: jax.Array, rhs: jax.Array) -> jax.Array:
    """Block forward substitution: x_p = D_p⁻¹ (r_p − L[p, :p] x_{:p})."""
    b = dinv.shape[-1]
    xs: list[jax.Array] = []
    for p in range(dinv.shape[-3]):
        lo, hi = p * b, (p + 1) * b
        r = rhs[..., lo:hi, :]
        if p:
            r = r - _mm(lower[..., lo:hi, :lo], _cat(xs))
        xs.append(_mm(dinv[..., p, :, :], r))
    return _cat(xs)


def _backward_subst(lower: jax.Array, dinv: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solves (I + L)ᵀ y = rhs: y_p = D_p⁻ᵀ (r_p − L[p+1:, p]ᵀ y_{p+1:})."""
    b, nb = dinv.shape[-1], dinv.shape[-3]
    ys: list[jax.Array] = []
    for p in reversed(range(nb)):
        lo, hi = p * b, (p + 1) * b
        r = rhs[..., lo:hi, :]
        if ys:
            r = r - _tmm(lower[..., hi:, lo:hi], _cat(ys[::-1]))
        ys.append(_tmm(dinv[..., p, :, :], r))
    return _cat(ys[::-1])


def _block_size(c: int) -> int:
    return SOLVE_BLOCK if c % SOLVE_BLOCK == 0 else c


@jax.custom_vjp
def unit_lower_solve(lower: jax.Array, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(I + L)⁻¹ [A | B]`` for strictly lower-triangular L ``[.., C, C]``."""
    return _solve_fwd(lower, a, b)[0]


def _solve_fwd(
    lower: jax.Array, a: jax.Array, b: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]:
    dinv = _unit_lower_inverse(_diag_blocks(lower, _block_size(lower.shape[-1])))
    x = _forward_subst(lower, dinv, jnp.concatenate([a, b], axis=-1))
    na = a.shape[-1]
    return (x[..., :na], x[..., na:]), (lower, dinv, x)


def _solve_bwd(
    res: tuple[jax.Array, jax.Array, jax.Array], dxs: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    lower, dinv, x = res
    dx = jnp.concatenate(dxs, axis=-1)
    d_rhs = _backward_subst(lower, dinv, dx)
    d_lower = jnp.where(_tril(lower.shape[-1], -1), -_einsum("...ik,...jk->...ij", d_rhs, x), 0.0)
    na = dxs[0].shape[-1]
    return d_lower, d_rhs[..., :na], d_rhs[..., na:]


unit_lower_solve.defvjp(_solve_fwd, _solve_bwd)


# ----------------------------------------------------------------------------------------------
# Chunked form.


def _chunk_group(
    s: jax.Array, xs: tuple[jax.Array | None, ...], scale: float
) -> tuple[jax.Array, jax.Array]:
    """G consecutive chunks: state ``[B, H, K, V]`` → (next state, o ``[B, G, C, H, V]``).

    xs: q, k ``[B, G, C, H, K]``; v ``[B, G, C, H, V]``; beta ``[B, G, C, H]``; gam = γ
    ``[B, G, C, H]`` (None: ungated); seg = resets so far in each chunk ``[B, G, 1, C]`` (None:
    no resets). The state-independent work (KKᵀ, QKᵀ, the solve) is batched over the G chunks,
    then the state passes through them in order, then the outputs are batched again.
    """
    # The barrier keeps the slicing of xs out of the fusions below (it blocks vectorisation of
    # the exp there).
    q, k, v, beta, gam, seg = jax.lax.optimization_barrier(xs)
    q, k, v = (jnp.swapaxes(x, 2, 3) for x in (q, k, v))  # [B, G, H, C, ·]
    beta = jnp.swapaxes(beta, 2, 3)
    c = k.shape[-2]

    mask = _tril(c)  # j ≤ i and, with resets, same segment
    carry = last = None  # tokens that read S / that write the next S (None: all)
    if seg is not None:
        mask = mask & (seg[..., :, None] == seg[..., None, :])
        carry, last = seg == 0, seg == seg[..., -1:]
    qk = _einsum("...ik,...jk->...ij", q, k)
    kk = _einsum("...ik,...jk->...ij", k, k)
    read_q, read_k = q, beta  # token i reads S as (q_i ⊙ exp(γ_i)) and (β_i exp(γ_i) k_i)
    write = None if last is None else last.astype(k.dtype)  # k_i's weight in the next S
    decay = None if carry is None else carry[..., -1].astype(k.dtype)  # S's weight in it
    if gam is not None:
        gam = jnp.swapaxes(gam, 2, 3)
        big_gamma = jnp.exp(jnp.where(mask, gam[..., :, None] - gam[..., None, :], 0.0))
        qk, kk = qk * big_gamma, kk * big_gamma
        eg = jnp.exp(gam)
        read_q, read_k = eg[..., None] * q, eg * beta
        write = jnp.exp(gam[..., -1:] - gam) * (1.0 if write is None else write)
        decay = eg[..., -1] * (1.0 if decay is None else decay)
    if carry is not None:
        read_q, read_k = jnp.where(carry[..., None], read_q, 0.0), jnp.where(carry, read_k, 0.0)
    lower = jnp.where(mask & _tril(c, -1), beta[..., :, None] * kk, 0.0)
    w, u = unit_lower_solve(lower, read_k[..., None] * k, beta[..., None] * v)
    k_out = k if write is None else write[..., None] * k

    states, v_new = [], []  # chunk-entry states S_[n] and Ṽ = U − W S_[n]
    for i in range(k.shape[1]):
        states.append(s)
        v_new.append(u[:, i] - _mm(w[:, i], s))
        s_kept = s if decay is None else decay[:, i, ..., None, None] * s
        s = s_kept + _tmm(k_out[:, i], v_new[-1])
    states, v_new = jnp.stack(states, 1), jnp.stack(v_new, 1)
    o = _mm(read_q, states) + _mm(jnp.where(mask, qk, 0.0), v_new)
    return s, scale * jnp.swapaxes(o, 2, 3)


def _group(x: jax.Array | None, i: jax.Array) -> jax.Array | None:
    """Group i of a ``[B, N/G, ...]`` array (a slice, no copy of the whole array)."""
    return None if x is None else jax.lax.dynamic_index_in_dim(x, i, axis=1, keepdims=False)


def _put_group(buf: jax.Array, x: jax.Array, i: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(buf, x, i, axis=1)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan_groups(
    scale: float, xs: tuple[jax.Array | None, ...], seg: jax.Array | None, s0: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Runs :func:`_chunk_group` over the groups of ``[B, N/G, G, C, ...]`` inputs.

    Returns (o ``[B, N/G, G, C, H, V]``, final state). The gradient is hand-written: the forward
    pass keeps only each group's entry state; the backward pass walks the groups in reverse,
    recomputes each group (rematerialisation) and applies its VJP.
    """
    return _scan_groups_fwd(scale, xs, seg, s0)[0]


def _scan_groups_fwd(
    scale: float, xs: tuple[jax.Array | None, ...], seg: jax.Array | None, s0: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], tuple]:
    q, v = xs[0], xs[2]
    n_groups = q.shape[1]

    def body(i: jax.Array, carry: tuple) -> tuple:
        s, o, entry = carry
        entry = jax.lax.dynamic_update_index_in_dim(entry, s, i, axis=0)
        s, o_i = _chunk_group(s, (*(_group(x, i) for x in xs), _group(seg, i)), scale)
        return s, _put_group(o, o_i, i), entry

    o = jnp.zeros((*q.shape[:-1], v.shape[-1]), s0.dtype)
    entry = jnp.zeros((n_groups, *s0.shape), s0.dtype)
    s, o, entry = jax.lax.fori_loop(0, n_groups, body, (s0, o, entry))
    return (o, s), (xs, seg, entry)


def _scan_groups_bwd(scale: float, res: tuple, cts: tuple[jax.Array, jax.Array]) -> tuple:
    xs, seg, entry = res
    d_o, d_s = cts
    n_groups = xs[0].shape[1]

    def body(j: jax.Array, carry: tuple) -> tuple:
        i = n_groups - 1 - j
        d_s, d_xs = carry
        seg_i = _group(seg, i)

        def group(s: jax.Array, x: tuple) -> tuple[jax.Array, jax.Array]:
            return _chunk_group(s, (*x, seg_i), scale)

        _, vjp = jax.vjp(group, entry[i], tuple(_group(x, i) for x in xs))
        d_s, d_x = vjp((d_s, _group(d_o, i)))
        d_xs = tuple(
            None if d is None else _put_group(d, dx, i) for d, dx in zip(d_xs, d_x, strict=True)
        )
        return d_s, d_xs

    d_xs = tuple(None if x is None else jnp.zeros_like(x) for x in xs)
    d_s0, d_xs = jax.lax.fori_loop(0, n_groups, body, (d_s, d_xs))
    return d_xs, None, d_s0


_scan_groups.defvjp(_scan_groups_fwd, _scan_groups_bwd)


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
    """Chunked WY/UT (gated) delta rule over groups of chunks, all arithmetic in fp32.

    q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, beta, g ``[B, T, H]`` (g None: ungated),
    initial_state ``[B, H, K, V]``, reset ``[B, T]`` bool (None: no resets).
    Returns (o ``[B, T, H, V]`` fp32, final state ``[B, H, K, V]`` fp32).
    """
    f32 = jnp.float32
    bsz, t, h, _ = q.shape
    c = min(chunk_size, t)
    n = -(-t // c)  # chunks
    n_groups = -(-n // CHUNKS_PER_STEP)
    grp = -(-n // n_groups)  # chunks per group
    pad = n_groups * grp * c - t

    def groups(x: jax.Array) -> jax.Array:  # [B, T, ...] → [B, N/G, G, C, ...], no transpose
        if pad:
            x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return x.astype(f32).reshape(bsz, n_groups, grp, c, *x.shape[2:])

    gam = seg = None
    if g is not None:  # γ: chunk-local cumsum, as a matmul (a fused reduce-window slows the exp)
        gam = _einsum("...jh,ji->...ih", groups(g), jnp.triu(jnp.ones((c, c), f32)))
    if reset is not None:
        seg = jnp.cumsum(groups(reset).astype(jnp.int32), axis=-1)[..., None, :]
    xs = (groups(q), groups(k), groups(v), groups(beta), gam)
    o, final = _scan_groups(scale, xs, seg, initial_state.astype(f32))
    return o.reshape(bsz, n_groups * grp * c, h, -1)[:, :t], final
