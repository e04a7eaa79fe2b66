"""Top-k token routing over M memories (or experts), as pure functions.

Per token ``x_t ∈ R^D`` with router weights ``W_g ∈ R^{D×M}``::

    s_t = softmax_fp32(x_t W_g)                      router probabilities   [B, T, M]
    (w_t, I_t) = TopK(s_t, k)                        ties: the lower memory id first
    w_t ← w_t / Σ_j w_tj                             renormalised weights   [B, T, k]

Capacity (per batch row and call): memory m keeps at most ``cap_m`` of the pairs routed to
it; pairs are ranked within their memory in time order and a memory that received
``n_m > cap_m`` pairs drops its *oldest* ``n_m − cap_m`` (it keeps its newest ``cap_m``).

Load balancing (Switch style): over all B·T positions, ``f_m`` = fraction of tokens routed to
m (``Σ f = k``, counted before capacity drops, no gradient), ``P_m`` = mean renormalised
weight on m (0 where not selected, ``Σ P = 1``)::

    L_aux = M · Σ_m f_m P_m      = k when balanced (f = k/M, P = 1/M); = M when every token
                                   picks the same k memories with equal weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def router_probs(x: jax.Array, router: jax.Array) -> jax.Array:
    """``x [B, T, D]``, ``router [D, M]`` -> ``softmax(x W_g)`` ``[B, T, M]`` in float32."""
    logits = jnp.einsum("btd,dm->btm", x.astype(jnp.float32), router.astype(jnp.float32))
    return jax.nn.softmax(logits, axis=-1)


def top_k(probs: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``probs [..., M]`` -> (renormalised weights ``[..., k]`` (same dtype), memory ids
    ``[..., k]`` int32), in decreasing probability; equal probabilities: the lower id first."""
    if not 1 <= k <= probs.shape[-1]:
        raise ValueError(f"k must be in [1, M={probs.shape[-1]}]; got {k}")
    w, idx = jax.lax.top_k(probs, k)
    return w / jnp.sum(w, axis=-1, keepdims=True), idx.astype(jnp.int32)


def append_always_on(w: jax.Array, idx: jax.Array, memory: int) -> tuple[jax.Array, jax.Array]:
    """Appends one pair ``(weight 1, id memory)`` to every token: ``[..., k] -> [..., k + 1]``
    (a shared memory every token writes to and reads from)."""
    lead = idx.shape[:-1]
    idx = jnp.concatenate([idx, jnp.full((*lead, 1), memory, idx.dtype)], axis=-1)
    w = jnp.concatenate([w, jnp.ones((*lead, 1), w.dtype)], axis=-1)
    return w, idx


def capacity(capacity_factor: float, length: int) -> int:
    """Pairs a memory may keep per row: ``C = max(1, ceil(capacity_factor · T))``."""
    if not 0.0 < capacity_factor <= 1.0:
        raise ValueError(f"capacity_factor must be in (0, 1]; got {capacity_factor!r}")
    return max(1, math.ceil(capacity_factor * length - 1e-9))


def rank_in_memory(mem: jax.Array, cap: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rank of each pair among its memory's pairs (time order), counts and drops.

    ``mem [B, P]`` int (memory of each pair, pairs in time order), ``cap [S]`` int (capacity
    of each of S memories) -> (rank ``[B, P]`` (0 = the memory's oldest pair), count ``[B, S]``
    (pairs routed to each memory), drop ``[B, S]`` = ``max(count − cap, 0)`` (its oldest pairs
    beyond capacity)).
    """
    onehot = jax.nn.one_hot(mem, cap.shape[0], dtype=jnp.int32)  # [B, P, S]
    csum = jnp.cumsum(onehot, axis=1)
    rank = jnp.take_along_axis(csum, mem[..., None], axis=-1)[..., 0] - 1
    count = csum[:, -1]
    return rank, count, jnp.maximum(count - cap, 0)


def kept_slot(mem: jax.Array, rank: jax.Array, drop: jax.Array) -> jax.Array:
    """Slot of each pair among its memory's kept pairs ``[B, P]``: ``rank − drop[mem]``,
    negative where the pair is dropped (the memory's ``drop`` oldest pairs)."""
    return rank - jnp.take_along_axis(drop, mem, axis=-1)


def load_fractions(idx: jax.Array, num_memories: int) -> jax.Array:
    """``f_m``: fraction of the positions of ``idx [B, T, k]`` routed to each memory ``[M]``
    (``Σ f = k``)."""
    sel = jax.nn.one_hot(idx, num_memories, dtype=jnp.float32)  # [B, T, k, M]
    return jnp.mean(jnp.sum(sel, axis=2), axis=(0, 1))


def aux_loss(w: jax.Array, idx: jax.Array, num_memories: int) -> jax.Array:
    """``L_aux = M · Σ_m f_m P_m`` over all positions; ``w, idx [B, T, k]`` from :func:`top_k`.
    Gradients flow through the weights (``P``) only."""
    sel = jax.nn.one_hot(idx, num_memories, dtype=jnp.float32)  # [B, T, k, M]
    f = jnp.mean(jnp.sum(sel, axis=2), axis=(0, 1))  # fraction routed, Σ f = k
    p = jnp.mean(jnp.sum(sel * w[..., None], axis=2), axis=(0, 1))  # mean weight, Σ P = 1
    return num_memories * jnp.sum(f * p)


def load_max(idx: jax.Array, num_memories: int) -> jax.Array:
    """``max_m f_m · M / k``: 1 = balanced, ``M / k`` = every token on the same k memories."""
    k = idx.shape[-1]
    return jnp.max(load_fractions(idx, num_memories)) * num_memories / k


def router_entropy(probs: jax.Array) -> jax.Array:
    """Mean entropy (nats) of the router distributions ``probs [..., M]``; log M = uniform."""
    return jnp.mean(jnp.sum(jax.scipy.special.entr(probs), axis=-1))
