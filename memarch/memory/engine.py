"""The associative-memory engine: one memory stream, three forms, batched over rows and heads.

Per stream (one batch row, one head), token t writes then reads (read after the write)::

    u_t = ∇_W ℓ(P(A_a(t)); k_t, v_t, δ_t)       gradient at the anchor memory A_a(t)
    S_t = η_t S_{t−1} − θ_t u_t                  (rule gd: η = 0, S not stored)
                                                 (u soft-clamped to max_grad_norm if set)
    A_t = γ_t ⊙ A_{t−1} + S_t                    γ_t = exp(log_keep_t)
    y_t = M(P(A_t); q_t)

The anchor a(t) is the last token before the current chunk of ``chunk_size`` tokens, counted
from the start of t's segment: with chunk size 1 this is the exact online recurrence.

Forms (``impl``):

- ``naive``: ``lax.scan`` token by token (the specification). Handles packed segments
  (``segment_ids``: memory and momentum reset to their initial values where the id changes)
  and padding (``valid`` False: the step is the identity on A and S and does not advance the
  chunk position).
- ``chunk``: ``lax.scan`` over chunks. Inside a chunk all gradients are taken at once at the
  chunk-start memory (``vmap(grad)``); momentum and decay are linear recurrences solved with
  ``lax.associative_scan`` (materialised per-token memories), or, when P = id and the
  structure gives ``layers`` (linear and MLP memories: every weight is a matrix used as
  ``W h``), with the dual form, which never materialises per-token weights. A token's gradient
  on each weight is rank 1, ``u_j = g_j h_jᵀ`` (``h_j`` the weight's input, ``g_j`` the loss
  gradient at its output, both at the anchor), so every weight follows::

      ρ_t = Π_{i≤t} γ_i;  m_t = Π_{i≤t} η_i;  n_{j,k} = θ_j Π_{i=j+1..k} η_i
      G[t,j] = Σ_{j≤k≤t} (ρ_t/ρ_k) n_{j,k};   f_t = Σ_{k≤t} (ρ_t/ρ_k) m_k
      W_t x = ρ_t W₀x + f_t S₀x − Σ_{j≤t} G[t,j] g_j (h_j·x)

  and the read applies that to each layer's query-path input (for a linear memory
  ``y_t = ρ_t W₀q_t + f_t S₀q_t − Σ_j G[t,j] e_j (k_j·q_t)``; for an MLP the TTT-style dual of
  every layer in turn). Cost per chunk of C tokens: O(C²·width) per weight instead of C copies
  of every weight.

  Each chunk is rematerialised in the backward pass when ``spec.remat``.
- ``auto``: ``chunk`` for plain sequences, ``naive`` with ``segment_ids`` or ``valid`` (the
  chunk grid of a packed segment starts at the segment, not at a multiple of chunk_size).

Decode is one ``naive`` step on a :class:`MemoryState` (memory, momentum, anchor, position):
the cache is the memory's weights and momentum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from memarch.memory.biases import make_bias, uses_delta
from memarch.memory.config import MemoryConfig
from memarch.memory.retention import Retention, make_retention
from memarch.memory.rules import uses_momentum
from memarch.memory.structures import Structure, make_structure
from memarch.ops import IMPLS_NO_PALLAS, check_impl
from memarch.ops._scan import segment_starts


@dataclasses.dataclass(frozen=True)
class MemorySpec:
    """The static description of a memory the forms run (built by :func:`make_spec`)."""

    structure: Structure
    loss: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    retention: Retention
    momentum: bool
    chunk_size: int
    remat: bool = True
    uses_delta: bool = False
    max_grad_norm: float | None = None
    dual_form: bool = True  # False forces per-token weights (benchmarks and tests compare both)

    @property
    def dual(self) -> bool:
        """True when the chunk form uses the dual form (a structure with ``layers``, P = id)."""
        return self.dual_form and self.structure.layers is not None and self.retention.identity


def make_spec(config: MemoryConfig) -> MemorySpec:
    """Builds the :class:`MemorySpec` of a validated :class:`MemoryConfig`."""
    structure = make_structure(
        config.structure,
        depth=config.depth,
        expansion=config.expansion,
        activation=config.activation,
        residual=config.residual,
    )
    return MemorySpec(
        structure=structure,
        loss=make_bias(config.bias, p=config.p),
        retention=make_retention(
            config.retention, q=config.q, scale=config.simplex_scale, threshold=config.threshold
        ),
        momentum=uses_momentum(config.rule),
        chunk_size=config.chunk_size,
        remat=config.remat,
        uses_delta=uses_delta(config.bias),
        max_grad_norm=config.max_grad_norm,
    )


@struct.dataclass
class WriteGates:
    """Per-token gates. ``lr`` θ ``[B, T, H]``; ``log_momentum`` log η ``[B, T, H]`` (None for
    gd); ``log_keep`` log γ ``[B, T, H]`` or ``[B, T, H, V]`` (None: γ = 1); ``delta`` δ
    ``[B, T, H]`` (None: unused)."""

    lr: jax.Array
    log_momentum: jax.Array | None = None
    log_keep: jax.Array | None = None
    delta: jax.Array | None = None


@struct.dataclass
class MemoryState:
    """Streaming state; leaves ``[B, H, ...]``. ``memory`` A, ``momentum`` S (None for gd),
    ``anchor`` the chunk-start memory, ``pos`` ``[B]`` int32 tokens since the segment start."""

    memory: Any
    momentum: Any
    anchor: Any
    pos: jax.Array


def initial_state(spec: MemorySpec, init: Any, batch_size: int) -> MemoryState:
    """The empty state: memory = the per-head initial weights ``init`` (leaves ``[H, ...]``)."""
    mem = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch_size, *x.shape)), init)
    mom = jax.tree.map(jnp.zeros_like, mem) if spec.momentum else None
    return MemoryState(mem, mom, mem, jnp.zeros((batch_size,), jnp.int32))


# --- helpers over pytrees ------------------------------------------------------------------


def _where(c, a, b):
    return jax.tree.map(lambda x, y: jnp.where(c, x, y), a, b)


def _scale(tree: Any, g: jax.Array) -> Any:
    """``g ⊙ tree`` for one token: ``g [C]`` with C = 1 (scalar) or C = rows of a matrix leaf."""
    return jax.tree.map(lambda x: x * (g[0] if g.shape[0] == 1 else g[:, None]), tree)


def _bcast(g: jax.Array, leaf: jax.Array) -> jax.Array:
    """Per-token ``g [b]`` or ``[b, C]`` reshaped to broadcast against a leaf ``[b, ...]``."""
    if g.ndim == 2 and g.shape[1] == 1:
        g = g[:, 0]
    return g.reshape(g.shape + (1,) * (leaf.ndim - g.ndim))


def _linear_scan(a: jax.Array, x: Any, h0: Any) -> Any:
    """``h_t = a_t h_{t−1} + x_t`` over the leading axis for every leaf (associative scan).

    ``a [b]`` or ``[b, C]`` broadcast to each leaf; returns every ``h_t`` (leaves ``[b, ...]``).
    """

    def combine(e1, e2):
        a1, x1 = e1
        a2, x2 = e2
        return a1 * a2, a2 * x1 + x2

    def one(x_leaf, h_leaf):
        a_leaf = jnp.broadcast_to(_bcast(a, x_leaf), x_leaf.shape)
        acum, xs = jax.lax.associative_scan(combine, (a_leaf, x_leaf))
        return acum * h_leaf[None] + xs

    return jax.tree.map(one, x, h0)


def _softclamp_factor(norm: jax.Array, c: float | None) -> jax.Array:
    """``c·tanh(‖u‖/c)/‖u‖``: scales a gradient of norm ``‖u‖`` to a norm below ``c``."""
    if c is None:
        return jnp.ones_like(norm)
    safe = jnp.maximum(norm, 1e-12)
    return c * jnp.tanh(safe / c) / safe


def _grad_at(spec: MemorySpec) -> Callable:
    """``u(W, k, v, δ) = ∇_W ℓ(M(W; k), v, δ)``, soft-clamped to ``spec.max_grad_norm``."""

    def loss(w, k, v, d):
        return spec.loss(spec.structure.apply(w, k), v, d)

    def grad(w, k, v, d):
        u = jax.grad(loss)(w, k, v, d)
        if spec.max_grad_norm is None:
            return u
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(u)))
        f = _softclamp_factor(norm, spec.max_grad_norm)
        return jax.tree.map(lambda x: f * x, u)

    return grad


# --- the forms for one stream ---------------------------------------------------------------
# Stream inputs: q, k [T, K]; v [T, V]; lr, lm, delta [T]; lk [T, C]; reset, valid [T] bool.


def _scan_stream(spec, init, state, q, k, v, lr, lm, lk, delta, reset, valid):
    """Token-by-token reference (see the module docstring). Returns (y [T, V], state)."""
    grad = _grad_at(spec)
    proj = spec.retention.project
    zeros = jax.tree.map(jnp.zeros_like, init)

    def step(carry, xs):
        a, s, anc, pos = carry
        q_t, k_t, v_t, lr_t, lm_t, lk_t, d_t, reset_t, valid_t = xs
        a = _where(reset_t, init, a)
        if spec.momentum:
            s = _where(reset_t, zeros, s)
        pos = jnp.where(reset_t, 0, pos)
        anc = _where(pos % spec.chunk_size == 0, a, anc)
        u = grad(proj(anc), k_t, v_t, d_t)
        write = jax.tree.map(lambda g: -lr_t * g, u)
        s_new = (
            jax.tree.map(lambda s_, w: jnp.exp(lm_t) * s_ + w, s, write) if spec.momentum else write
        )
        a_new = jax.tree.map(jnp.add, _scale(a, jnp.exp(lk_t)), s_new)
        a = _where(valid_t, a_new, a)
        if spec.momentum:
            s = _where(valid_t, s_new, s)
        pos = pos + valid_t.astype(pos.dtype)
        y = spec.structure.apply(proj(a), q_t)
        return (a, s, anc, pos), y

    carry = (state.memory, state.momentum, state.anchor, state.pos)
    carry, y = jax.lax.scan(step, carry, (q, k, v, lr, lm, lk, delta, reset, valid))
    return y, MemoryState(*carry)


def _chunk_materialised(spec, a0, s0, q, k, v, lr, lm, lk, delta, valid):
    """One chunk (anchor ``a0``) with per-token memories from associative scans."""
    grad = _grad_at(spec)
    proj = spec.retention.project
    u = jax.vmap(grad, in_axes=(None, 0, 0, 0))(proj(a0), k, v, delta)  # leaves [b, ...]
    write = jax.tree.map(lambda g: -_bcast(lr, g) * g, u)
    s_all = _linear_scan(jnp.exp(lm), write, s0) if spec.momentum else write
    w = valid.astype(jnp.float32)
    a_all = _linear_scan(jnp.exp(lk), jax.tree.map(lambda s: _bcast(w, s) * s, s_all), a0)
    y = jax.vmap(lambda a_t, q_t: spec.structure.apply(proj(a_t), q_t))(a_all, q)
    last = lambda t: jax.tree.map(lambda x: x[-1], t)  # noqa: E731
    return y, last(a_all), (last(s_all) if spec.momentum else None)


def _anchor_factors(spec, a0, k, v, delta):
    """Rank-1 factors of every token's gradient at the anchor: ``u_j[n] = g_j[n] h_j[n]ᵀ``.

    For each weight ``n`` of a structure with ``layers``: ``h [b, in]`` is its input and
    ``g [b, out]`` the loss gradient at its output (``∂ℓ/∂(W h)``), both at the anchor memory
    ``a0``; soft-clamped with ``‖u_j‖² = Σ_n ‖g_j[n]‖² ‖h_j[n]‖²``.
    """
    layers = spec.structure.layers

    def loss(eps, k_t, v_t, d_t):
        ins = {}

        def matmul(n, h):
            ins[n] = h
            return h @ a0[n].T + eps[n]

        return spec.loss(layers(matmul, k_t), v_t, d_t), ins

    eps = {n: jnp.zeros(w.shape[:1], w.dtype) for n, w in a0.items()}
    g, h = jax.vmap(jax.grad(loss, has_aux=True), in_axes=(None, 0, 0, 0))(eps, k, v, delta)
    if set(h) != set(a0) or any(w.ndim != 2 for w in a0.values()):
        raise ValueError(
            f"structure {spec.structure.name!r} gives `layers`, so every weight must be a "
            f"matrix read once through matmul; weights {sorted(a0)}, read {sorted(h)}"
        )
    if spec.max_grad_norm is not None:
        sq = sum(jnp.sum(g[n] ** 2, -1) * jnp.sum(h[n] ** 2, -1) for n in g)
        f = _softclamp_factor(jnp.sqrt(sq), spec.max_grad_norm)[:, None]
        g = {n: f * x for n, x in g.items()}
    return g, h


def _weigh(gmat: jax.Array, hh: jax.Array, g: jax.Array) -> jax.Array:
    """``Σ_j G[t, j, c] hh[t, j] g[j, c]`` for ``G [t, j, C]`` with C = 1 or C = out."""
    if gmat.shape[-1] == 1:
        return (gmat[..., 0] * hh) @ g
    return jnp.einsum("tjc,tj,jc->tc", gmat, hh, g)


def _chunk_dual(spec, a0, s0, q, k, v, lr, lm, lk, delta, valid):
    """One chunk of a memory with ``layers`` and P = id in the dual form: no per-token weights.

    Every weight ``W`` of the structure follows ``W_t = ρ_t W₀ + f_t S₀ − Σ_{j≤t} G[t,j] g_j h_jᵀ``
    (module docstring; ``g_j h_jᵀ`` the rank-1 gradient at the anchor), so the read of token t
    applies ``W_t`` to a query-path input ``x_t`` as
    ``ρ_t W₀x_t + f_t S₀x_t − Σ_j G[t,j] g_j (h_j·x_t)``: an attention-like product per layer.
    """
    g, h = _anchor_factors(spec, a0, k, v, delta)
    b = q.shape[0]
    causal = jnp.tril(jnp.ones((b, b), bool))  # [t, k]: k ≤ t
    lrho = jnp.cumsum(lk, axis=0)  # [b, C]
    diff = lrho[:, None, :] - lrho[None, :, :]  # [t, k, C]
    dmat = jnp.exp(jnp.where(causal[..., None], diff, -jnp.inf))
    dmat = dmat * valid.astype(dmat.dtype)[None, :, None]
    if spec.momentum:
        lmc = jnp.cumsum(lm)
        nd = lmc[None, :] - lmc[:, None]  # [j, k] = log Π_{i=j+1..k} η_i
        n = jnp.exp(jnp.where(causal.T, nd, -jnp.inf)) * lr[:, None]  # [j, k], k ≥ j
        m = jnp.exp(lmc)
    else:
        n = jnp.diag(lr)
        m = jnp.zeros_like(lr)
    gmat = jnp.einsum("tkc,jk->tjc", dmat, n)  # [t, j, C]
    f = jnp.einsum("tkc,k->tc", dmat, m)  # [t, C]
    rho = jnp.exp(lrho)  # [t, C]

    def matmul(name, x):  # x [b, in]: token t's input to weight `name`, read with W_t
        z = rho * (x @ a0[name].T)
        if spec.momentum:
            z = z + f * (x @ s0[name].T)
        return z - _weigh(gmat, jnp.where(causal, x @ h[name].T, 0.0), g[name])

    y = spec.structure.layers(matmul, q)
    a_end, s_end = {}, ({} if spec.momentum else None)
    for name, w0 in a0.items():
        update = (gmat[-1] * g[name]).T @ h[name]  # Σ_j G[last, j] g_j h_jᵀ
        a_end[name] = rho[-1][:, None] * w0 - update
        if spec.momentum:
            a_end[name] = a_end[name] + f[-1][:, None] * s0[name]
            s_end[name] = m[-1] * s0[name] - (n[:, -1][:, None] * g[name]).T @ h[name]
    return y, a_end, s_end


def _chunk_stream(spec, init, state, q, k, v, lr, lm, lk, delta, reset, valid):
    """Scan over chunks of ``spec.chunk_size``; the incoming position must be chunk-aligned."""
    del init, reset
    t = q.shape[0]
    c = spec.chunk_size
    n = -(-t // c)
    pad = n * c - t

    def split(x, fill=0):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=fill)
        return x.reshape((n, c) + x.shape[1:])

    xs = tuple(split(x) for x in (q, k, v, lr, lm, lk, delta)) + (split(valid, False),)
    chunk = _chunk_dual if spec.dual else _chunk_materialised

    def body(carry, xs):
        a, s, _ = carry
        y, a_end, s_end = chunk(spec, a, s, *xs)
        return (a_end, s_end, a), y

    if spec.remat:
        body = jax.checkpoint(body)
    (a, s, anc), y = jax.lax.scan(body, (state.memory, state.momentum, state.memory), xs)
    y = y.reshape((n * c,) + y.shape[2:])[:t]
    pos = state.pos + jnp.sum(valid).astype(state.pos.dtype)
    return y, MemoryState(a, s, anc, pos)


# --- the batched entry points -----------------------------------------------------------------


def _batched(stream_fn, spec, init, state, q, k, v, gates, reset, valid):
    """Runs ``stream_fn`` over rows (axis 0) and heads (axis 2 of the inputs)."""
    bsz, t, h, _ = q.shape
    dtype = jnp.promote_types(q.dtype, jnp.float32)  # f32 state for bf16 inputs; f64 kept
    f32 = lambda x: x.astype(dtype)  # noqa: E731
    lr = jnp.where(valid[..., None], f32(gates.lr), 0.0)
    zeros = jnp.zeros((bsz, t, h), dtype)
    lm = zeros if gates.log_momentum is None else f32(gates.log_momentum)
    lm = jnp.where(valid[..., None], lm, 0.0)
    lk = zeros if gates.log_keep is None else f32(gates.log_keep)
    if lk.ndim == 3:
        lk = lk[..., None]
    lk = jnp.where(valid[..., None, None], lk, 0.0)
    delta = jnp.ones((bsz, t, h), dtype) if gates.delta is None else f32(gates.delta)
    pos_b = state.pos

    def per_head(init_h, mem, mom, anc, q, k, v, lr, lm, lk, d, pos, reset, valid):
        st = MemoryState(mem, mom, anc, pos)
        y, st = stream_fn(spec, init_h, st, q, k, v, lr, lm, lk, d, reset, valid)
        return y, st.memory, st.momentum, st.anchor, st.pos

    head_axes = (0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, None, None, None)
    per_row = jax.vmap(per_head, in_axes=head_axes, out_axes=(1, 0, 0, 0, None))
    row_axes = (None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    run = jax.vmap(per_row, in_axes=row_axes, out_axes=(0, 0, 0, 0, 0))
    y, mem, mom, anc, pos = run(
        init,
        state.memory,
        state.momentum,
        state.anchor,
        f32(q),
        f32(k),
        f32(v),
        lr,
        lm,
        lk,
        delta,
        pos_b,
        reset,
        valid,
    )
    return y, MemoryState(mem, mom, anc, pos)


def memory_forward(
    spec: MemorySpec,
    init: Any,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    gates: WriteGates,
    *,
    state: MemoryState | None = None,
    segment_ids: jax.Array | None = None,
    valid: jax.Array | None = None,
    impl: str = "auto",
) -> tuple[jax.Array, MemoryState]:
    """Runs the memory over a sequence.

    Args:
      spec: the memory (:func:`make_spec`).
      init: per-head initial memory, leaves ``[H, ...]`` (learned; a segment start resets to it).
      q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
      gates: :class:`WriteGates`.
      state: a :class:`MemoryState` to continue from (None: the initial state).
      segment_ids: ``[B, T]`` int; packed sequences reset memory and momentum to ``init``.
      valid: ``[B, T]`` bool; False marks padding (the identity step on memory and momentum).
      impl: ``naive`` | ``chunk`` | ``auto`` (see the module docstring); there is no ``pallas``
        form (ValueError).

    Returns:
      ``(y [B, T, H, V] in q's dtype, final MemoryState)``.
    """
    check_impl(impl, IMPLS_NO_PALLAS)
    bsz, t, h, dk = q.shape
    if k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"k must match q {q.shape} and v must be [B, T, H, V]; got {k.shape}, {v.shape}"
        )
    packed = segment_ids is not None or valid is not None
    if impl == "chunk" and packed and spec.chunk_size > 1:
        raise ValueError(
            "impl='chunk' cannot run segment_ids or valid with chunk_size > 1 (each segment's "
            "chunk grid starts at the segment); use impl='auto' or 'naive'"
        )
    reset = segment_starts(segment_ids, bsz, t)
    valid = jnp.ones((bsz, t), bool) if valid is None else valid.astype(bool)
    fresh = state is None
    if fresh:
        state = initial_state(spec, init, bsz)
    args = (spec, init, state, q, k, v, gates, reset, valid)
    if impl == "naive" or (impl == "auto" and packed):
        y, st = _batched(_scan_stream, *args)
    elif impl == "chunk":
        y, st = _batched(_chunk_stream, *args)
    elif fresh:  # auto on a plain sequence from the initial state
        y, st = _batched(_chunk_stream, *args)
    else:  # auto, continuing a state: chunked when the incoming position is chunk-aligned
        aligned = jnp.all(state.pos % spec.chunk_size == 0)
        y, st = jax.lax.cond(
            aligned,
            lambda: _batched(_chunk_stream, *args),
            lambda: _batched(_scan_stream, *args),
        )
    return y.astype(q.dtype), st


def memory_read(spec: MemorySpec, memory: Any, q: jax.Array) -> jax.Array:
    """Reads a fixed memory without writing: ``y[b, t, h] = M(P(A[b, h]); q[b, t, h])``.

    ``memory`` leaves ``[B, H, ...]``; ``q [B, T, H, K]`` → ``[B, T, H, V]`` (q's dtype).
    """

    def per_head(a, qs):  # a: one memory; qs [T, K]
        w = spec.retention.project(a)
        return jax.vmap(lambda qt: spec.structure.apply(w, qt))(qs)

    dtype = jnp.promote_types(q.dtype, jnp.float32)
    run = jax.vmap(jax.vmap(per_head, in_axes=(0, 1), out_axes=1), in_axes=(0, 0))
    return run(memory, q.astype(dtype)).astype(q.dtype)
