"""Autoregressive generation with the mixers' decode caches.

The prompt is prefilled in one call, then each new token is decoded from the caches with
``x [B, 1]`` inputs inside a ``lax.scan`` (one compiled program for the whole loop).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from memarch.models.lm import LM


def sample_token(logits: jax.Array, rng: jax.Array, temperature: float) -> jax.Array:
    """``logits [B, V] -> tokens [B]``: argmax when temperature == 0, else softmax sampling."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, logits / temperature, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature"))
def _generate(graphdef, state, prompt, rng, *, max_new_tokens: int, temperature: float):
    model = nnx.merge(graphdef, state)
    b, t0 = prompt.shape
    cache = model.init_cache(b, t0 + max_new_tokens, jnp.float32)
    logits, cache = model(prompt, cache=cache)
    rng, first_rng = jax.random.split(rng)
    first = sample_token(logits[:, -1], first_rng, temperature)

    def body(carry, step_rng):
        token, cache = carry
        logits, cache = model(token[:, None], cache=cache)
        nxt = sample_token(logits[:, -1], step_rng, temperature)
        return (nxt, cache), token

    (last, _), tokens = jax.lax.scan(
        body, (first, cache), jax.random.split(rng, max_new_tokens - 1)
    )
    generated = jnp.concatenate([tokens.T, last[:, None]], axis=1)
    return jnp.concatenate([prompt, generated], axis=1)


def generate(
    model: LM,
    prompt: jax.Array,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Extends ``prompt [B, T0]`` (int) by ``max_new_tokens``; returns ``[B, T0 + n]``.

    ``temperature`` 0 is greedy decoding; > 0 samples from ``softmax(logits / temperature)``
    with ``rng`` (required then).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
    if temperature > 0 and rng is None:
        raise ValueError("sampling with temperature > 0 needs rng=jax.random.key(...)")
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must have shape [B, T0] with T0 >= 1; got {prompt.shape}")
    rng = jax.random.key(0) if rng is None else rng
    graphdef, state = nnx.split(model)
    return _generate(
        graphdef,
        state,
        prompt.astype(jnp.int32),
        rng,
        max_new_tokens=max_new_tokens,
        temperature=float(temperature),
    )
