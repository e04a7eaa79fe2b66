"""The naive (specification) form shared by every recurrent op: a float32 ``lax.scan`` over
tokens that calls the op's one-token step, plus the packed-sequence reset mask.

Per batch row, with state ``S`` ``[B, H, K, V]`` and a reset flag ``r_t`` (a new packed segment
starts at token t)::

    S ← 0 if r_t;    (o_t, S) ← step(x_t, S)

:func:`segment_starts` turns ``segment_ids`` ``[B, T]`` into the flags ``r`` ``[B, T]``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

StepFn = Callable[..., tuple[jax.Array, jax.Array]]


def segment_starts(segment_ids: jax.Array | None, batch: int, length: int) -> jax.Array:
    """Bool ``[B, T]``: True where a token starts a new segment (never at t = 0).

    At such a token the recurrent state is reset to zero before the token is written.
    """
    if segment_ids is None:
        return jnp.zeros((batch, length), dtype=bool)
    prev = jnp.concatenate([segment_ids[:, :1], segment_ids[:, :-1]], axis=1)
    return segment_ids != prev


def scan_tokens(
    step: StepFn,
    inputs: tuple[jax.Array, ...],
    initial_state: jax.Array | None,
    starts: jax.Array | None,
    out_dtype: jnp.dtype,
) -> tuple[jax.Array, jax.Array]:
    """A float32 ``lax.scan`` over tokens calling ``step(*inputs_t, state) -> (o_t, state)``.

    ``inputs`` are ``[B, T, ...]`` arrays (cast to float32), the first is q ``[B, T, H, K]``
    and the third v ``[B, T, H, V]``. ``initial_state`` is ``[B, H, K, V]`` (zeros when None);
    ``starts`` is None or bool ``[B, T]``: True resets the state to zero before that token.
    Returns (o ``[B, T, H, V]`` in ``out_dtype``, final state ``[B, H, K, V]`` float32).
    """
    q, v = inputs[0], inputs[2]
    b, t, h, dk = q.shape
    s0 = jnp.zeros((b, h, dk, v.shape[-1]), jnp.float32)
    if initial_state is not None:
        s0 = initial_state.astype(jnp.float32)
    if starts is None:
        starts = jnp.zeros((b, t), bool)
    xs = tuple(jnp.swapaxes(x.astype(jnp.float32), 0, 1) for x in inputs)

    def body(s: jax.Array, xs_t: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        *x_t, start = xs_t
        s = jnp.where(start[:, None, None, None], 0.0, s)
        o, s = step(*x_t, s)
        return s, o

    s_final, o = jax.lax.scan(body, s0, (*xs, starts.T))
    return jnp.swapaxes(o, 0, 1).astype(out_dtype), s_final
