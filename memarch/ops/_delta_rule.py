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

This is :func:`memarch.ops.gated_delta_rule` with no gate (``g = None``): the same validation,
implementations (``impl``: ``"naive"``, ``"chunk"``, ``"pallas"``, ``"auto"``; the kernel takes
a power-of-two ``chunk_size`` ≥ 16 and falls back to ``"chunk"`` with ``segment_ids``) and
engine (:mod:`memarch.ops._chunk_delta`). ``segment_ids`` ``[B, T]`` packs sequences: where the
id changes, the state is reset to zero before that token; ``initial_state`` applies to each
row's first segment. :func:`delta_rule_step` is the decode path.
"""

from __future__ import annotations

import jax

from memarch.ops._gated_delta_rule import gated_delta_rule, gated_delta_rule_step


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
    return gated_delta_rule_step(q, k, v, None, beta, state, scale=scale)


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
    """Delta rule over a sequence: :func:`memarch.ops.gated_delta_rule` with ``g = None``;
    returns (o ``[B, T, H, V]``, final state ``[B, H, K, V]`` fp32 or None)."""
    return gated_delta_rule(
        q, k, v, None, beta, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, segment_ids=segment_ids, impl=impl,
        chunk_size=chunk_size,
    )  # fmt: skip
