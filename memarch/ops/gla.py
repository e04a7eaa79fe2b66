"""Gated linear attention (GLA) with a scalar or per-key-channel log decay.

Per batch row and head, with key-major state ``S_t ∈ R^{K×V}`` and log decay ``g_t ≤ 0``::

    S_t = Diag(exp(g_t)) S_{t-1} + k_t v_tᵀ            o_t = scale · S_tᵀ q_t

``g`` is either per head, ``[B, T, H]`` (one decay for the whole state: simple GLA, RetNet,
Mamba-2 style), or per key channel, ``[B, T, H, K]`` (GLA). It is used in float32. ``scale``
defaults to ``K ** -0.5``. With ``g = 0`` this is :func:`memarch.ops.linear_attention`.

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; o ``[B, T, H, V]`` in q's dtype; state
``[B, H, K, V]`` float32. Optional ``segment_ids`` ``[B, T]`` pack several sequences per row:
where the id changes the state is reset to zero before that token is written.

Implementations (``impl``): ``"naive"`` is a float32 ``lax.scan`` over :func:`gla_step` (the
specification); ``"chunk"`` is the chunked XLA form in :mod:`memarch.ops._chunk_decay`;
``"pallas"`` is the Pallas kernel pair :func:`memarch.kernels.gla.gla_pallas` (compiled on
GPU/TPU, interpret mode on CPU). With ``segment_ids`` the kernels do not apply and ``"pallas"``
falls back to ``"chunk"``. ``"auto"`` is ``"pallas"`` on the backends in
:data:`AUTO_PALLAS_BACKENDS` (when ``chunk_size`` suits the kernel and there are no
``segment_ids``), ``"chunk"`` everywhere else. :func:`gla_step` is the decode path.
"""

from __future__ import annotations

import functools

import jax

from memarch.kernels import _platform
from memarch.kernels import gla as gla_kernel
from memarch.ops import _checks
from memarch.ops._chunk_decay import check_step_inputs, chunk_decay, decay_step, scan_tokens

# Backends where ``impl="auto"`` runs the Pallas kernels (compiled); elsewhere the XLA chunk form.
AUTO_PALLAS_BACKENDS = _checks.AUTO_PALLAS_BACKENDS


def gla_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array,
    state: jax.Array,
    *,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One decode step: ``S ← Diag(exp(g)) S + k vᵀ``, ``o = scale · Sᵀ q``.

    Args:
      q, k: ``[B, H, K]``. v: ``[B, H, V]``. g: log decay ``[B, H]`` or ``[B, H, K]``.
      state: ``[B, H, K, V]`` (used in float32).
      scale: query scale, ``K ** -0.5`` by default.

    Returns:
      (o ``[B, H, V]`` in q's dtype, new state ``[B, H, K, V]`` float32).
    """
    check_step_inputs(q, k, v, state, g)
    return decay_step(q, k, v, g, state, _checks.resolve_scale(scale, q.shape[-1]))


def gla(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array,
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
      g: log decay (≤ 0), ``[B, T, H]`` (per head) or ``[B, T, H, K]`` (per key channel).
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
    _checks.check_gate("g", g, q)
    _checks.check_state(initial_state, q, v)
    _checks.check_segment_ids(segment_ids, q)
    _checks.check_impl(impl, _checks.IMPLS_PALLAS)
    _checks.check_chunk_size(chunk_size)
    scale = _checks.resolve_scale(scale, dk)
    impl = resolve_impl(impl, chunk_size, segment_ids)
    starts = None if segment_ids is None else _checks.segment_starts(segment_ids, b, t)

    if impl == "pallas":
        return gla_kernel.gla_pallas(
            q, k, v, g, scale=scale, initial_state=initial_state,
            output_final_state=output_final_state, chunk_size=chunk_size,
        )  # fmt: skip
    if impl == "naive":
        step = functools.partial(gla_step, scale=scale)
        o, s = scan_tokens(step, (q, k, v, g), initial_state, starts, q.dtype)
    else:
        o, s = chunk_decay(q, k, v, g, initial_state, starts, scale=scale, chunk_size=chunk_size)
    return o, (s if output_final_state else None)


def resolve_impl(impl: str, chunk_size: int, segment_ids: jax.Array | None) -> str:
    """``"pallas"`` without segment_ids; ``"auto"`` → ``"pallas"`` on AUTO_PALLAS_BACKENDS when
    the kernel accepts ``chunk_size``; otherwise ``"chunk"``. ``"naive"``/``"chunk"`` as given."""
    if impl == "pallas":
        if segment_ids is None:
            gla_kernel.check_chunk_size(chunk_size)
            return "pallas"
        return "chunk"
    if impl == "auto":
        kernel_ok = chunk_size >= 8 and not chunk_size & (chunk_size - 1)
        on_device = _platform.backend() in AUTO_PALLAS_BACKENDS
        return "pallas" if on_device and kernel_ok and segment_ids is None else "chunk"
    return impl
