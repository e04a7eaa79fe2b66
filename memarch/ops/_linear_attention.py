"""Linear attention (no decay).

Per batch row and head, with key-major state ``S_t ∈ R^{K×V}``::

    S_t = S_{t-1} + k_t v_tᵀ            o_t = scale · S_tᵀ q_t   (read after the write)

``scale`` defaults to ``K ** -0.5``.

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; o ``[B, T, H, V]`` in q's dtype; state
``[B, H, K, V]`` float32. Optional ``segment_ids`` ``[B, T]`` pack several sequences per row:
where the id changes the state is reset to zero before that token is written.

This is :func:`memarch.ops.gla` with no gate (``g = None``): the same validation, the same
implementations (``impl``: ``"naive"``, ``"chunk"``, ``"pallas"`` (the GLA kernel with a zero
per-head gate), ``"auto"``) and the same fallback to ``"chunk"`` with ``segment_ids``.
:func:`linear_attention_step` is the decode path (:func:`memarch.ops.gla_step` with no gate).
"""

from __future__ import annotations

import jax

from memarch.ops._gla import gla, gla_step


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
    return gla_step(q, k, v, None, state, scale=scale)


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
    """Causal linear attention over a sequence: :func:`memarch.ops.gla` with ``g = None``.

    Args:
      q, k: ``[B, T, H, K]``. v: ``[B, T, H, V]``; q, k, v share one float dtype.
      scale, initial_state, output_final_state, segment_ids, impl, chunk_size: as for
        :func:`memarch.ops.gla`.

    Returns:
      (o ``[B, T, H, V]`` in q's dtype, final state ``[B, H, K, V]`` float32 or None).
    """
    return gla(
        q, k, v, None, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, segment_ids=segment_ids, impl=impl,
        chunk_size=chunk_size,
    )  # fmt: skip
