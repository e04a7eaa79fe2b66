"""Argument validation shared by every op in :mod:`memarch.ops`.

Each check raises ``ValueError`` naming the argument, the shape or value it got and what is
accepted, so bad input fails in Python rather than deep inside XLA.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

IMPLS_XLA = ("auto", "naive", "chunk")
# Ops with a Pallas kernel in ``memarch.kernels`` also accept ``impl="pallas"``.
IMPLS_PALLAS = (*IMPLS_XLA, "pallas")
# Backends where ``impl="auto"`` picks the Pallas kernels (and the XLA form everywhere else).
# The GPU entry follows the kernels' design target; the timings that confirm it on H100 are
# pending (experiments/bench_kernels.py), so remove "gpu" here if they show otherwise.
AUTO_PALLAS_BACKENDS = ("tpu", "gpu")


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


def check_impl(impl: str, accepted: Sequence[str] = IMPLS_XLA) -> None:
    if impl not in accepted:
        raise ValueError(f"impl must be one of {list(accepted)}; got {impl!r}")


def check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")


def resolve_scale(scale: float | None, head_dim: int) -> float:
    """The query scale: ``head_dim ** -0.5`` by default."""
    return head_dim**-0.5 if scale is None else float(scale)


def segment_starts(segment_ids: jax.Array | None, batch: int, length: int) -> jax.Array:
    """Bool ``[B, T]``: True where a token starts a new segment (never at t = 0).

    At such a token the recurrent state is reset to zero before the token is written.
    """
    if segment_ids is None:
        return jnp.zeros((batch, length), dtype=bool)
    prev = jnp.concatenate([segment_ids[:, :1], segment_ids[:, :-1]], axis=1)
    return segment_ids != prev
