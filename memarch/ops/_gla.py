"""Gated linear attention (GLA) with a scalar or per-key-channel log decay.

Per batch row and head, with key-major state ``S_t ∈ R^{K×V}`` and log decay ``g_t ≤ 0``::

    S_t = Diag(exp(g_t)) S_{t-1} + k_t v_tᵀ            o_t = scale · S_tᵀ q_t

``g`` is either per head, ``[B, T, H]`` (one decay for the whole state: simple GLA, RetNet,
Mamba-2 style), or per key channel, ``[B, T, H, K]`` (GLA). It is used in float32. ``scale``
defaults to ``K ** -0.5``. ``g = None`` is no decay: :func:`memarch.ops.linear_attention` is
this op with ``g = None``.

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; o ``[B, T, H, V]`` in q's dtype; state
``[B, H, K, V]`` float32. Optional ``segment_ids`` ``[B, T]`` pack several sequences per row:
where the id changes the state is reset to zero before that token is written.

Implementations (``impl``, :mod:`memarch.ops._dispatch`): ``"naive"`` is a float32
``lax.scan`` over :func:`gla_step` (the specification); ``"chunk"`` is the chunked XLA form in
:mod:`memarch.ops._chunk_decay`; ``"pallas"`` is the Pallas kernel pair
:func:`memarch.kernels.gla.gla_pallas` (compiled on GPU/TPU, interpret mode on CPU; chunk sizes
:func:`memarch.kernels.gla.supports_chunk_size`). With ``segment_ids`` the kernels do not apply
and ``"pallas"`` falls back to ``"chunk"``. ``"auto"`` is ``"pallas"`` on the backends in
:data:`memarch.ops._dispatch.AUTO_PALLAS_BACKENDS` when the kernel applies, ``"chunk"``
everywhere else. :func:`gla_step` is the decode path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from memarch.kernels import _checks
from memarch.kernels import gla as gla_kernel
from memarch.ops._chunk_decay import chunk_decay, decay_step
from memarch.ops._dispatch import resolve_impl
from memarch.ops._scan import scan_tokens, segment_starts


def gla_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array | None,
    state: jax.Array,
    *,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One decode step: ``S ← Diag(exp(g)) S + k vᵀ``, ``o = scale · Sᵀ q``.

    Args:
      q, k: ``[B, H, K]``. v: ``[B, H, V]``.
      g: log decay ``[B, H]`` or ``[B, H, K]``; None is no decay (linear attention).
      state: ``[B, H, K, V]`` (used in float32).
      scale: query scale, ``K ** -0.5`` by default.

    Returns:
      (o ``[B, H, V]`` in q's dtype, new state ``[B, H, K, V]`` float32).
    """
    _checks.check_step(q, k, v, state, g=g)
    return decay_step(q, k, v, g, state, _checks.resolve_scale(scale, q.shape[-1]))


def gla(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array | None,
    *,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    impl: str = "auto",
    chunk_size: int = 64,
) -> tuple[jax.Array, jax.Array | None]:
    """Gated linear attention over a sequence.

    Args:
      q, k: ``[B, T, H, K]``. v: ``[B, T, H, V]``; q, k, v share one float dtype.
      g: log decay (≤ 0), ``[B, T, H]`` (per head) or ``[B, T, H, K]`` (per key channel);
        None is no decay (linear attention).
      scale: query scale, ``K ** -0.5`` by default.
      initial_state: ``[B, H, K, V]`` state before the first token (zeros when None).
      output_final_state: also return the state after the last token.
      segment_ids: int ``[B, T]``; the state resets to zero where the id changes.
      impl: ``"naive"``, ``"chunk"``, ``"pallas"`` or ``"auto"`` (module docstring).
      chunk_size: tokens per chunk for ``"chunk"`` and ``"pallas"`` (a power of two ≥ 8 for
        ``"pallas"``).

    Returns:
      (o ``[B, T, H, V]`` in q's dtype, final state ``[B, H, K, V]`` float32 or None).
    """
    b, t, _, dk, _ = _checks.check_qkv(q, k, v)
    if g is not None:
        _checks.check_gate("g", g, q)
    _checks.check_state(initial_state, q, v)
    _checks.check_segment_ids(segment_ids, q)
    _checks.check_chunk_size(chunk_size)
    impl = resolve_impl(impl, gla_kernel, chunk_size=chunk_size, segment_ids=segment_ids, x=q)
    scale = _checks.resolve_scale(scale, dk)

    if impl == "pallas":
        g_kernel = jnp.zeros(q.shape[:3], jnp.float32) if g is None else g
        return gla_kernel.gla_pallas(
            q, k, v, g_kernel, scale=scale, initial_state=initial_state,
            output_final_state=output_final_state, chunk_size=chunk_size,
        )  # fmt: skip
    starts = None if segment_ids is None else segment_starts(segment_ids, b, t)
    if impl == "naive":
        if g is None:
            step = lambda q_t, k_t, v_t, s: decay_step(q_t, k_t, v_t, None, s, scale)
            o, s = scan_tokens(step, (q, k, v), initial_state, starts, q.dtype)
        else:
            step = functools.partial(decay_step, scale=scale)
            o, s = scan_tokens(step, (q, k, v, g), initial_state, starts, q.dtype)
    else:
        o, s = chunk_decay(q, k, v, g, initial_state, starts, scale=scale, chunk_size=chunk_size)
    return o, (s if output_final_state else None)
