"""Attentional biases: the inner loss ``ℓ(p, v)`` the memory minimises at each token.

``p = M(k) [dv]`` is the memory's prediction for the key, ``v [dv]`` the target, ``delta`` a
per-token scalar (the Huber threshold; ignored by the others). A bias is a function
``loss(p, v, delta) -> scalar``; its gradient w.r.t. the memory's weights (autodiff through
the structure) is the write. With ``r = p − v``:

- ``dot``:   ``ℓ = −⟨p, v⟩``                         (Hebbian: linear attention, ∇_W = −v kᵀ)
- ``l2``:    ``ℓ = ½‖r‖²``                             (delta rule / Titans)
- ``lp``:    ``ℓ = (1/p) Σ_c (r_c² + ε)^{p/2}``        (smooth |r|^p; ∇ ≈ sign(r)|r|^{p−1})
- ``huber``: per coordinate, ``½ r_c²`` if ``|r_c| ≤ δ`` else ``δ(|r_c| − ½δ)``
- ``huber_norm``: Yaad's switch on the residual norm: ``½‖r‖²`` if ``‖r‖ ≤ δ`` else
  ``δ(‖r‖ − ½δ)`` (ℓ2 gradient inside, δ times the normalised ℓ1-like gradient outside).

To add a bias, write ``loss(p, v, delta, *, p_norm)`` and register it in :data:`BIASES`
(``BIASES.register(name, loss, uses_delta=False)``); its metadata ``uses_delta`` says whether
it reads ``delta``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from memarch.registry import Registry

LP_EPS = 1e-6  # smoothing of |r| in the lp bias (keeps outer gradients finite at r = 0)


def dot_bias(p: jax.Array, v: jax.Array, delta: jax.Array, *, p_norm: float) -> jax.Array:
    return -jnp.vdot(p, v)


def l2_bias(p: jax.Array, v: jax.Array, delta: jax.Array, *, p_norm: float) -> jax.Array:
    r = p - v
    return 0.5 * jnp.vdot(r, r)


def lp_bias(p: jax.Array, v: jax.Array, delta: jax.Array, *, p_norm: float) -> jax.Array:
    r = p - v
    return jnp.sum((r * r + LP_EPS) ** (0.5 * p_norm)) / p_norm


def huber_bias(p: jax.Array, v: jax.Array, delta: jax.Array, *, p_norm: float) -> jax.Array:
    a = jnp.abs(p - v)
    return jnp.sum(jnp.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta)))


def huber_norm_bias(p: jax.Array, v: jax.Array, delta: jax.Array, *, p_norm: float) -> jax.Array:
    r = p - v
    sq = jnp.vdot(r, r)
    n = jnp.sqrt(jnp.maximum(sq, 1e-12))
    return jnp.where(n <= delta, 0.5 * sq, delta * (n - 0.5 * delta))


BIASES: Registry[Callable[..., jax.Array]] = Registry("attentional bias")
BIASES.register("dot", dot_bias, uses_delta=False)
BIASES.register("l2", l2_bias, uses_delta=False)
BIASES.register("lp", lp_bias, uses_delta=False)
BIASES.register("huber", huber_bias, uses_delta=True)
BIASES.register("huber_norm", huber_norm_bias, uses_delta=True)
BIASES.seal()


def uses_delta(name: str) -> bool:
    """True for biases that read the per-token threshold ``delta`` (the Huber family)."""
    return bool(BIASES.metadata(name)["uses_delta"])


def make_bias(
    name: str, *, p: float = 3.0
) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """``loss(p, v, delta)`` of bias ``name``; ``p`` is the exponent of ``lp`` (≥ 1)."""
    loss = BIASES.choice("bias", name)
    if not p >= 1.0:
        raise ValueError(f"p (the lp bias exponent) must be >= 1; got {p}")
    return functools.partial(loss, p_norm=float(p))
