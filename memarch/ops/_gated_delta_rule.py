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
``g = None`` is the plain delta rule (:func:`memarch.ops.delta_rule` is this op with no gate).

Implementations (``impl``, :mod:`memarch.ops._dispatch`): ``"naive"`` is an fp32 ``lax.scan``
over tokens of the step of :func:`gated_delta_rule_step` (the specification); ``"chunk"`` is the
WY/UT form in XLA, parallel within a chunk with a loop over chunks for the state; ``"pallas"``
is the same form as Pallas kernels (:mod:`memarch.kernels.delta_rule`; compiled on GPU/TPU,
interpreted on CPU), which needs a chunk size
:func:`memarch.kernels.delta_rule.supports_chunk_size` takes (a power of two ≥ 16) and does not
take ``segment_ids`` (with ``segment_ids`` it falls back to ``"chunk"``). ``"auto"`` picks
``"pallas"`` on GPU and TPU backends when it applies, ``"chunk"`` elsewhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memarch.kernels import _checks
from memarch.kernels import delta_rule as delta_kernel
from memarch.ops._chunk_delta import chunk_delta, delta_step
from memarch.ops._dispatch import resolve_impl
from memarch.ops._scan import scan_tokens, segment_starts


def gated_delta_rule_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array | None,
    beta: jax.Array,
    state: jax.Array,
    *,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One token (decode). q, k ``[B, H, K]``, v ``[B, H, V]``, g (None: no decay), beta
    ``[B, H]``, state ``[B, H, K, V]`` → (o ``[B, H, V]`` in q's dtype, new state fp32)."""
    _checks.check_step(q, k, v, state, g=g, beta=beta, per_channel_ok=False)
    s = _checks.resolve_scale(scale, q.shape[-1])
    decay = None if g is None else jnp.exp(g.astype(jnp.float32))
    o, new_state = delta_step(q, k, v, beta, state, decay, s)
    return o.astype(q.dtype), new_state


def gated_delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array | None,
    beta: jax.Array,
    *,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    impl: str = "auto",
    chunk_size: int = 64,
) -> tuple[jax.Array, jax.Array | None]:
    """Gated delta rule over a sequence; returns (o ``[B, T, H, V]``, final state or None).

    q, k ``[B, T, H, K]``; v ``[B, T, H, V]``; g ``[B, T, H]`` log decay (None: the plain delta
    rule); beta ``[B, T, H]``; initial_state ``[B, H, K, V]``; segment_ids int ``[B, T]``;
    impl ``"naive"``, ``"chunk"``, ``"pallas"`` or ``"auto"``; chunk_size a positive int.
    """
    bsz, t, h, dk, dv = _checks.check_qkv(q, k, v)
    if g is not None:
        _checks.check_gate("g", g, q, per_channel_ok=False)
    _checks.check_beta(beta, q)
    _checks.check_state(initial_state, q, v)
    _checks.check_segment_ids(segment_ids, q)
    _checks.check_chunk_size(chunk_size)
    impl = resolve_impl(impl, delta_kernel, chunk_size=chunk_size, segment_ids=segment_ids, x=q)
    s = _checks.resolve_scale(scale, dk)
    if impl == "pallas":
        return delta_kernel.gated_delta_rule_pallas(
            q, k, v, beta, g, scale=s, initial_state=initial_state,
            output_final_state=output_final_state, chunk_size=chunk_size,
        )  # fmt: skip
    f32 = jnp.float32
    state = jnp.zeros((bsz, h, dk, dv), f32) if initial_state is None else initial_state.astype(f32)

    if impl == "naive":  # the specification: one delta_step per token
        reset = segment_starts(segment_ids, bsz, t)
        if g is None:
            step = lambda q_t, k_t, v_t, b_t, st: delta_step(q_t, k_t, v_t, b_t, st, None, s)
            xs = (q, k, v, beta)
        else:
            step = lambda q_t, k_t, v_t, g_t, b_t, st: delta_step(
                q_t, k_t, v_t, b_t, st, jnp.exp(g_t), s
            )
            xs = (q, k, v, g, beta)
        o, final = scan_tokens(step, xs, state, reset, q.dtype)
    else:
        reset = None if segment_ids is None else segment_starts(segment_ids, bsz, t)
        o, final = chunk_delta(
            q, k, v, beta, g, scale=s, initial_state=state, reset=reset, chunk_size=chunk_size
        )
        o = o.astype(q.dtype)
    return o, (final if output_final_state else None)
