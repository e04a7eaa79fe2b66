"""Delta rule (DeltaNet): an ungated fast-weight update with write strength β.

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; beta ``[B, T, H]``; state ``[B, H, K, V]``
fp32 (key-major) whatever the input dtype; o ``[B, T, H, V]`` in q's dtype. The query scale
``s`` defaults to K^{-1/2}; q and k are used as given (callers L2-normalise them).

Recurrence (read after write)::

    S_t = S_{t-1} + β_t k_t (v_t − S_{t-1}ᵀ k_t)ᵀ  =  (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ
    o_t = s · S_tᵀ q_t

β ∈ (0, 1), or (0, 2) to allow negative eigenvalues; it is never clamped.

Chunked WY/UT form (chunk of C tokens entering with ``S = S_[n]``; M causal incl. diagonal)::

    A  = (I + tril(diag(β) KKᵀ, −1))⁻¹
    W  = A diag(β) K;    U = A diag(β) V;    Ṽ = U − W S      (Π_r (I − β_r k_r k_rᵀ) = I − KᵀW)
    S_[n+1] = S + Kᵀ Ṽ
    O  = s[Q S + (QKᵀ ⊙ M) Ṽ]

This is :func:`memarch.ops.gated_delta_rule.gated_delta_rule` with g = 0; both run on
:mod:`memarch.ops._chunk_delta`. ``segment_ids`` ``[B, T]`` packs sequences: where the id
changes, the state is reset to zero before that token; ``initial_state`` applies to each row's
first segment.

Implementations: ``"naive"`` is an fp32 ``lax.scan`` over tokens calling
:func:`delta_rule_step` (the specification); ``"chunk"`` is the WY/UT form in XLA;
``"pallas"`` the same form as Pallas kernels (:mod:`memarch.kernels.delta_rule`), with the
rules of :func:`memarch.ops.gated_delta_rule.resolve_impl` (power-of-two ``chunk_size`` ≥ 16;
falls back to ``"chunk"`` with ``segment_ids``); ``"auto"`` is ``"pallas"`` on GPU and TPU
backends where it applies, ``"chunk"`` elsewhere.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from memarch.ops import _checks
from memarch.ops._chunk_delta import check_step_args, chunk_delta, delta_step, recurrent_scan
from memarch.ops.gated_delta_rule import resolve_impl


def delta_rule_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    state: jax.Array,
    *,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One token (decode). q, k ``[B, H, K]``, v ``[B, H, V]``, beta ``[B, H]``, state
    ``[B, H, K, V]`` → (o ``[B, H, V]`` in q's dtype, new state fp32)."""
    check_step_args(q, k, v, beta, state)
    s = _checks.resolve_scale(scale, q.shape[-1])
    o, new_state = delta_step(q, k, v, beta, state, None, s)
    return o.astype(q.dtype), new_state


def delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    *,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    impl: str = "auto",
    chunk_size: int = 64,
) -> tuple[jax.Array, jax.Array | None]:
    """Delta rule over a sequence; returns (o ``[B, T, H, V]``, final state or None)."""
    _checks.check_impl(impl, _checks.IMPLS_PALLAS)
    _checks.check_chunk_size(chunk_size)
    bsz, t, h, dk, dv = _checks.check_qkv(q, k, v)
    _checks.check_beta(beta, q)
    _checks.check_state(initial_state, q, v)
    _checks.check_segment_ids(segment_ids, q)
    impl = resolve_impl(impl, segment_ids, chunk_size)
    s = _checks.resolve_scale(scale, dk)
    if impl == "pallas":
        # Pallas is imported only when used
        from memarch.kernels.delta_rule import gated_delta_rule_pallas

        o, final = gated_delta_rule_pallas(
            q, k, v, beta, None, scale=s, initial_state=initial_state,
            output_final_state=output_final_state, chunk_size=chunk_size,
        )  # fmt: skip
        return o, final
    f32 = jnp.float32
    state = jnp.zeros((bsz, h, dk, dv), f32) if initial_state is None else initial_state.astype(f32)

    if impl == "naive":  # the specification: one delta_rule_step per token
        reset = _checks.segment_starts(segment_ids, bsz, t)
        xs = tuple(x.astype(f32) for x in (q, k, v, beta))
        o, final = recurrent_scan(partial(delta_rule_step, scale=s), xs, state, reset)
    else:
        reset = None if segment_ids is None else _checks.segment_starts(segment_ids, bsz, t)
        o, final = chunk_delta(
            q, k, v, beta, None, scale=s, initial_state=state, reset=reset, chunk_size=chunk_size
        )
    return o.astype(q.dtype), (final if output_final_state else None)
