"""Gated delta rule (Gated DeltaNet), per head with a scalar log decay ``g_t ≤ 0``.

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; g, beta ``[B, T, H]``; state
``[B, H, K, V]`` fp32 (key-major) whatever the input dtype; o ``[B, T, H, V]`` in q's dtype.
The query scale ``s`` defaults to K^{-1/2}; q and k are used as given (callers L2-normalise).

Recurrence (decay first, then the delta update reads the decayed state; read after write)::

    S'  = exp(g_t) S_{t-1}
    S_t = S' + β_t k_t (v_t − S'ᵀ k_t)ᵀ  =  exp(g_t)(I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ
    o_t = s · S_tᵀ q_t

β ∈ (0, 1), or (0, 2) to allow negative eigenvalues; it is never clamped.

Chunked WY/UT form (chunk of C tokens entering with ``S = S_[n]``; γ = chunk-local inclusive
cumsum of g; Γ_ij = exp(γ_i − γ_j), masked to j ≤ i before the exp; M causal incl. diagonal)::

    A  = (I + tril(diag(β)(KKᵀ ⊙ Γ), −1))⁻¹
    W  = A diag(β ⊙ exp(γ)) K;    U = A diag(β) V;    Ṽ = U − W S
    S_[n+1] = exp(γ_C) S + (K ⊙ exp(γ_C − γ))ᵀ Ṽ
    O  = s[(Q ⊙ exp(γ)) S + (QKᵀ ⊙ Γ ⊙ M) Ṽ]

``segment_ids`` ``[B, T]`` packs sequences: where the id changes, the state is reset to zero
before that token; ``initial_state`` applies to each row's first segment and the final state is
the state after the last token (see :mod:`memarch.ops._chunk_delta` for the chunk masks).

Implementations: ``"naive"`` is an fp32 ``lax.scan`` over tokens calling
:func:`gated_delta_rule_step` (the specification); ``"chunk"`` is the WY/UT form in XLA,
parallel within a chunk with a loop over chunks for the state; ``"pallas"`` is the same form as
Pallas kernels (:mod:`memarch.kernels.delta_rule`; compiled on GPU/TPU, interpreted on CPU),
which needs a power-of-two ``chunk_size`` ≥ 16 and does not take ``segment_ids`` (with
``segment_ids`` it falls back to ``"chunk"``). ``"auto"`` picks ``"pallas"`` on GPU and TPU
backends when it applies (no ``segment_ids``, a supported ``chunk_size``), ``"chunk"`` elsewhere.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from memarch.ops import _checks
from memarch.ops._chunk_delta import check_step_args, chunk_delta, delta_step, recurrent_scan


def resolve_impl(impl: str, segment_ids: jax.Array | None, chunk_size: int) -> str:
    """The implementation that runs: ``"naive"``, ``"chunk"`` or ``"pallas"``.

    ``"pallas"`` falls back to ``"chunk"`` with ``segment_ids`` (the kernels do not pack
    sequences) and raises ValueError for a chunk size the kernels do not take; ``"auto"`` is
    ``"pallas"`` on GPU/TPU backends where it applies, ``"chunk"`` elsewhere.
    """
    _checks.check_impl(impl, _checks.IMPLS_PALLAS)
    if impl == "naive" or impl == "chunk":
        return impl
    if impl == "auto" and jax.default_backend() not in _checks.AUTO_PALLAS_BACKENDS:
        return "chunk"
    from memarch.kernels import delta_rule as kernel  # Pallas is imported only when used

    if impl == "pallas":
        kernel.check_chunk_size(chunk_size)
        return "chunk" if segment_ids is not None else "pallas"
    ok = segment_ids is None and kernel.chunk_size_supported(chunk_size)
    return "pallas" if ok else "chunk"


def gated_delta_rule_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array,
    beta: jax.Array,
    state: jax.Array,
    *,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One token (decode). q, k ``[B, H, K]``, v ``[B, H, V]``, g, beta ``[B, H]``, state
    ``[B, H, K, V]`` → (o ``[B, H, V]`` in q's dtype, new state fp32)."""
    check_step_args(q, k, v, beta, state, g=g)
    s = _checks.resolve_scale(scale, q.shape[-1])
    o, new_state = delta_step(q, k, v, beta, state, jnp.exp(g.astype(jnp.float32)), s)
    return o.astype(q.dtype), new_state


def gated_delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array,
    beta: jax.Array,
    *,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    impl: str = "auto",
    chunk_size: int = 64,
) -> tuple[jax.Array, jax.Array | None]:
    """Gated delta rule over a sequence; returns (o ``[B, T, H, V]``, final state or None)."""
    _checks.check_impl(impl, _checks.IMPLS_PALLAS)
    _checks.check_chunk_size(chunk_size)
    bsz, t, h, dk, dv = _checks.check_qkv(q, k, v)
    _checks.check_gate("g", g, q, per_channel_ok=False)
    _checks.check_beta(beta, q)
    _checks.check_state(initial_state, q, v)
    _checks.check_segment_ids(segment_ids, q)
    impl = resolve_impl(impl, segment_ids, chunk_size)
    s = _checks.resolve_scale(scale, dk)
    if impl == "pallas":
        # Pallas is imported only when used
        from memarch.kernels.delta_rule import gated_delta_rule_pallas

        o, final = gated_delta_rule_pallas(
            q, k, v, beta, g, scale=s, initial_state=initial_state,
            output_final_state=output_final_state, chunk_size=chunk_size,
        )  # fmt: skip
        return o, final
    f32 = jnp.float32
    state = jnp.zeros((bsz, h, dk, dv), f32) if initial_state is None else initial_state.astype(f32)

    if impl == "naive":  # the specification: one gated_delta_rule_step per token
        reset = _checks.segment_starts(segment_ids, bsz, t)
        xs = tuple(x.astype(f32) for x in (q, k, v, g, beta))
        o, final = recurrent_scan(partial(gated_delta_rule_step, scale=s), xs, state, reset)
    else:
        reset = None if segment_ids is None else _checks.segment_starts(segment_ids, bsz, t)
        o, final = chunk_delta(
            q, k, v, beta, g, scale=s, initial_state=state, reset=reset, chunk_size=chunk_size
        )
    return o.astype(q.dtype), (final if output_final_state else None)
