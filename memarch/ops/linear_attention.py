"""Linear attention (no decay).

Per batch row and head, with key-major state ``S_t ∈ R^{K×V}``::

    S_t = S_{t-1} + k_t v_tᵀ            o_t = scale · S_tᵀ q_t   (read after the write)

``scale`` defaults to ``K ** -0.5``.

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; o ``[B, T, H, V]`` in q's dtype; state
``[B, H, K, V]`` float32. Optional ``segment_ids`` ``[B, T]`` pack several sequences per row:
where the id changes the state is reset to zero before that token is written.

Implementations (``impl``): ``"naive"`` is a float32 ``lax.scan`` over
:func:`linear_attention_step` (the specification); ``"chunk"`` is the chunked form in
:mod:`memarch.ops._chunk_decay`; ``"pallas"`` is the GLA kernel with a zero per-head gate
(:func:`memarch.ops.gla.gla`, same fallback to ``"chunk"`` with ``segment_ids``); ``"auto"``
picks as :func:`memarch.ops.gla.gla` does. :func:`linear_attention_step` is the decode path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from memarch.ops import _checks
from memarch.ops._chunk_decay import check_step_inputs, chunk_decay, decay_step, scan_tokens
from memarch.ops.gla import gla, resolve_impl


def linear_attention_step(
    q: jax.Array, k: jax.Array, v: jax.Array, state: jax.Array, *, scale: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """One decode step: ``S ← S + k vᵀ``, ``o = scale · Sᵀ q``.

    Args:
      q, k: ``[B, H, K]``. v: ``[B, H, V]``. state: ``[B, H, K, V]`` (used in float32).
      scale: query scale, ``K ** -0.5`` by default.

    Returns:
      (o ``[B, H, V]`` in q's dtype, new state ``[B, H, K, V]`` float32).
    """
    check_step_inputs(q, k, v, state)
    return decay_step(q, k, v, None, state, _checks.resolve_scale(scale, q.shape[-1]))


def linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    impl: str = "auto",
    chunk_size: int = 64,
) -> tuple[jax.Array, jax.Array | None]:
    """Causal linear attention over a sequence.

    Args:
      q, k: ``[B, T, H, K]``. v: ``[B, T, H, V]``; q, k, v share one float dtype.
      scale: query scale, ``K ** -0.5`` by default.
      initial_state: ``[B, H, K, V]`` state before the first token (zeros when None).
      output_final_state: also return the state after the last token.
      segment_ids: int ``[B, T]``; the state resets to zero where the id changes.
      impl: ``"auto"``, ``"chunk"``, ``"naive"`` or ``"pallas"`` (module docstring).
      chunk_size: tokens per chunk for ``"chunk"`` and ``"pallas"`` (a power of two ≥ 8 for
        ``"pallas"``).

    Returns:
      (o ``[B, T, H, V]`` in q's dtype, final state ``[B, H, K, V]`` float32 or None).
    """
    b, t, _, dk, _ = _checks.check_qkv(q, k, v)
    _checks.check_state(initial_state, q, v)
    _checks.check_segment_ids(segment_ids, q)
    _checks.check_impl(impl, _checks.IMPLS_PALLAS)
    _checks.check_chunk_size(chunk_size)
    scale = _checks.resolve_scale(scale, dk)
    if resolve_impl(impl, chunk_size, segment_ids) == "pallas":
        g = jnp.zeros(q.shape[:3], jnp.float32)
        kw = dict(initial_state=initial_state, output_final_state=output_final_state)
        return gla(q, k, v, g, scale=scale, impl="pallas", chunk_size=chunk_size, **kw)
    starts = None if segment_ids is None else _checks.segment_starts(segment_ids, b, t)

    if impl == "naive":
        step = functools.partial(linear_attention_step, scale=scale)
        o, s = scan_tokens(step, (q, k, v), initial_state, starts, q.dtype)
    else:
        o, s = chunk_decay(q, k, v, None, initial_state, starts, scale=scale, chunk_size=chunk_size)
    return o, (s if output_final_state else None)
