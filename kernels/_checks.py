"""Argument validation for the linear-recurrence ops of :mod:`memarch.ops` and their kernels.

The one input-check family: the ops (:mod:`memarch.ops`) and the public kernel entry points of
this package validate with these functions (kernels sit below the ops, so the checks live here).
Each check raises ``ValueError`` naming the argument, the shape or value it got and what is
accepted, so bad input fails in Python rather than deep inside XLA.

Sequence arguments are ``[B, T, H, D]`` (:func:`check_qkv`, :func:`check_gate`,
:func:`check_beta`, :func:`check_state`, :func:`check_segment_ids`); single-token (decode)
arguments drop the T axis (:func:`check_step`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def check_qkv(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[int, int, int, int, int]:
    """Checks q, k ``[B, T, H, K]`` and v ``[B, T, H, V]``; returns (B, T, H, K, V)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must have shape [B, T, H, D] (rank 4); got shape {x.shape}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {q.shape} ([B, T, H, K]); got {k.shape}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"v must have shape [B, T, H, V] = {q.shape[:3]} + (V,) to match q; got {v.shape}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise ValueError(f"q, k, v must be floating point; got {q.dtype}")
    b, t, h, dk = q.shape
    return b, t, h, dk, v.shape[-1]


def check_gate(name: str, g: jax.Array, q: jax.Array, *, per_channel_ok: bool = True) -> bool:
    """Checks a log-space gate against q ``[B, T, H, K]``.

    Accepted: per head ``[B, T, H]`` and, when ``per_channel_ok``, per key channel
    ``[B, T, H, K]``. Returns True for the per-channel form.
    """
    b, t, h, dk = q.shape
    per_head, per_channel = (b, t, h), (b, t, h, dk)
    if g.shape == per_head:
        per_chan = False
    elif per_channel_ok and g.shape == per_channel:
        per_chan = True
    else:
        accepted = f"{per_head} ([B, T, H])"
        if per_channel_ok:
            accepted += f" or {per_channel} ([B, T, H, K])"
        raise ValueError(f"{name} must have shape {accepted}; got {g.shape}")
    if not jnp.issubdtype(g.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point; got {g.dtype}")
    return per_chan


def check_beta(beta: jax.Array, q: jax.Array) -> None:
    """Checks the delta-rule write strength ``beta`` of shape ``[B, T, H]``."""
    want = q.shape[:3]
    if beta.shape != want:
        raise ValueError(f"beta must have shape {want} ([B, T, H]); got {beta.shape}")
    if not jnp.issubdtype(beta.dtype, jnp.floating):
        raise ValueError(f"beta must be floating point; got {beta.dtype}")


def check_state(initial_state: jax.Array | None, q: jax.Array, v: jax.Array) -> None:
    """Checks ``initial_state`` of shape ``[B, H, K, V]``."""
    if initial_state is None:
        return
    b, _, h, dk = q.shape
    want = (b, h, dk, v.shape[-1])
    if initial_state.shape != want:
        raise ValueError(
            f"initial_state must have shape {want} ([B, H, K, V]); got {initial_state.shape}"
        )


def check_segment_ids(segment_ids: jax.Array | None, q: jax.Array) -> None:
    """Checks int ``segment_ids`` of shape ``[B, T]`` (a new segment starts where it changes)."""
    if segment_ids is None:
        return
    if segment_ids.shape != q.shape[:2]:
        raise ValueError(
            f"segment_ids must have shape {q.shape[:2]} ([B, T]); got {segment_ids.shape}"
        )
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(f"segment_ids must be integers; got {segment_ids.dtype}")


def check_chunk_size(
    chunk_size: int, supports: Callable[[int], bool] | None = None, rule: str = ""
) -> None:
    """Checks that ``chunk_size`` is a positive int and, given a kernel's ``supports`` predicate
    (its ``supports_chunk_size``), that the kernel takes it; ``rule`` words the kernel's sizes."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    if supports is not None and not supports(chunk_size):
        raise ValueError(f"chunk_size must be {rule} for impl='pallas'; got {chunk_size}")


def resolve_scale(scale: float | None, head_dim: int) -> float:
    """The query scale: ``head_dim ** -0.5`` by default."""
    return head_dim**-0.5 if scale is None else float(scale)


def check_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    state: jax.Array,
    *,
    g: jax.Array | None = None,
    beta: jax.Array | None = None,
    per_channel_ok: bool = True,
) -> None:
    """Checks single-token (decode) arguments: q, k ``[B, H, K]``, v ``[B, H, V]``, state
    ``[B, H, K, V]``, a log gate ``g`` ``[B, H]`` (or ``[B, H, K]`` when ``per_channel_ok``) and
    a write strength ``beta`` ``[B, H]``; None skips g or beta."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 3:
            raise ValueError(f"{name} must have shape [B, H, D] (rank 3); got shape {x.shape}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {q.shape} ([B, H, K]); got {k.shape}")
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(f"v must have shape [B, H, V] = {q.shape[:2]} + (V,); got {v.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise ValueError(f"q, k, v must be floating point; got {q.dtype}")
    if g is not None:
        accepted = f"{q.shape[:2]} ([B, H])"
        shapes = [q.shape[:2]]
        if per_channel_ok:
            accepted += f" or {q.shape} ([B, H, K])"
            shapes.append(q.shape)
        if g.shape not in shapes:
            raise ValueError(f"g must have shape {accepted}; got {g.shape}")
        if not jnp.issubdtype(g.dtype, jnp.floating):
            raise ValueError(f"g must be floating point; got {g.dtype}")
    if beta is not None:
        if beta.shape != q.shape[:2]:
            raise ValueError(f"beta must have shape {q.shape[:2]} ([B, H]); got {beta.shape}")
        if not jnp.issubdtype(beta.dtype, jnp.floating):
            raise ValueError(f"beta must be floating point; got {beta.dtype}")
    want = (*q.shape, v.shape[-1])
    if state.shape != want:
        raise ValueError(f"state must have shape {want} ([B, H, K, V]); got {state.shape}")
