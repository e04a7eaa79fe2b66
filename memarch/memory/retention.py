"""Memory retention (Miras): how an associative memory forgets.

Every retention in memarch keeps an *accumulator* ``A`` (a pytree like the memory's weights) that
follows a linear recurrence, and reads the memory through a projection ``W = P(A)``::

    S_t = η_t S_{t−1} − θ_t ∇_W ℓ(P(A_anchor); k_t, v_t)      (the learning rule, rules.py)
    A_t = γ_t ⊙ A_{t−1} + S_t                                  (γ_t = 1 − α_t: the decay gate)
    W_t = P(A_t)                                               (this module)

so every retention gets the chunked parallel form (the recurrences are linear in A, S) and the exact
online form for free. Registered retentions (:data:`RETENTIONS`, :func:`make_retention`):

- ``none``:        no decay (γ = 1), ``P = id``                 (linear attention / DeltaNet / TTT)
- ``decay``:       decay gate γ (scalar, or per value channel), ``P = id`` (GLA, GDN, Titans)
- ``lq``:          decay and ``P(A) = A / ‖A‖_q^{q−2}`` per weight matrix       (Moneta)
- ``kl_softmax``:  decay and ``P(A) = c · softmax(A)`` over each weight row: mirror descent
  on the scaled simplex with KL retention; ``A`` holds the logits (Memora). The default scale
  ``c = n`` (the row length, i.e. the fan-in) makes the mean entry 1, so that near a uniform
  row ``P(A) ≈ 1 + (A − mean A)``: the fluctuating part has the logits' (He) scale and a
  mirror step ``A − θu`` moves ``W`` by about ``θu``, as plain gradient descent does. With
  ``c = 1`` an n-wide row is an average: an MLP memory's pre-LayerNorm output is then nearly
  constant (std ~1e-4 for n = 32, 64), its LayerNorm read is dominated by ε and the memory is
  dead from the start.
- ``elastic_net``: decay and ``P(A) = S_γ(A)``, a smooth soft threshold
  ``|A|·arctan(A/γ)·2/π`` (regularised dual averaging with an ℓ1 + ℓ2 penalty)

For ``kl_softmax``, ``softmax(α log W_{t−1} − η∇) = softmax(α A_{t−1} − η∇)`` because softmax
ignores the per-row constant ``log Z``: the Memora update is exactly this linear recurrence on
the logits. To add a retention, write its projection of one weight matrix and register it
with :func:`register_retention` (then ``MemoryConfig(retention=name)`` accepts it). Each entry
of :data:`RETENTIONS` is a factory ``(**options) -> leaf_map | None`` (None: ``P = id``) with
the metadata ``decays`` (uses the decay gate γ) and ``options`` (the factory's keywords among
``q``, ``scale``, ``threshold``); built-ins and registered retentions share it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from memarch.registry import Registry


@dataclasses.dataclass(frozen=True)
class Retention:
    """``project(A) -> W`` (a pytree map) and whether the decay gate γ is used."""

    name: str
    project: Callable[[Any], Any]
    decays: bool
    identity: bool = False  # P = id (the engine may then use the dual form)


def _lq_normalise(a: jax.Array, q: float) -> jax.Array:
    norm_q = jnp.sum(jnp.abs(a) ** q) + 1e-6  # ‖A‖_q^q, smoothed so that A = 0 maps to 0
    return a * norm_q ** (-(q - 2.0) / q)


def _softmax_rows(a: jax.Array, c: float | None) -> jax.Array:
    return (a.shape[-1] if c is None else c) * jax.nn.softmax(a, axis=-1)


def _soft_threshold(a: jax.Array, gamma: float) -> jax.Array:
    return jnp.abs(a) * jnp.arctan(a / gamma) * (2.0 / jnp.pi)


# name -> leaf-map factory; metadata decays (uses γ) and options (the factory's keywords)
RETENTIONS: Registry[Callable[..., Callable[[jax.Array], jax.Array] | None]] = Registry("retention")
RETENTIONS.register("none", lambda: None, decays=False, options=())
RETENTIONS.register("decay", lambda: None, decays=True, options=())
RETENTIONS.register("lq", lambda q: lambda a: _lq_normalise(a, q), decays=True, options=("q",))
RETENTIONS.register(
    "kl_softmax", lambda scale: lambda a: _softmax_rows(a, scale), decays=True, options=("scale",)
)
RETENTIONS.register(
    "elastic_net",
    lambda threshold: lambda a: _soft_threshold(a, threshold),
    decays=True,
    options=("threshold",),
)
RETENTIONS.seal()


def make_retention(
    name: str, *, q: float = 4.0, scale: float | None = None, threshold: float = 1e-3
) -> Retention:
    """The retention ``name``. ``q``: the lq exponent (> 1); ``scale``: the simplex scale
    c of kl_softmax (> 0; None: each row sums to its length); ``threshold``: the elastic-net
    soft threshold γ (> 0)."""
    factory = RETENTIONS.choice("retention", name)
    if name == "lq" and not q > 1.0:
        raise ValueError(f"q (the lq retention exponent) must be > 1; got {q}")
    if name == "kl_softmax" and scale is not None and not scale > 0:
        raise ValueError(f"simplex_scale (kl_softmax) must be > 0 or None; got {scale}")
    if name == "elastic_net" and not threshold > 0:
        raise ValueError(f"threshold (elastic_net) must be > 0; got {threshold}")
    meta = RETENTIONS.metadata(name)
    given = {"q": q, "scale": scale, "threshold": threshold}
    leaf_map = factory(**{k: given[k] for k in meta["options"]})
    project = (lambda t: t) if leaf_map is None else (lambda t: jax.tree.map(leaf_map, t))
    return Retention(name, project, decays=meta["decays"], identity=leaf_map is None)


def register_retention(
    name: str, *, decays: bool = True, replace: bool = False
) -> Callable[[Callable[[jax.Array], jax.Array]], Callable[[jax.Array], jax.Array]]:
    """Decorator registering a retention by its projection of one weight matrix.

    ``leaf_map(a [R, C]) -> w [R, C]`` (float32, smooth, finite at ``a = 0``) is applied to
    each weight matrix of one memory; ``decays``: whether the decay gate γ is used too.
    ``replace=True`` re-registers a name added earlier (built-in names cannot be replaced).
    Check a new retention with :func:`memarch.mixers.conformance.check_retention`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"retention name must be a non-empty str; got {name!r}")
    if name in RETENTIONS and (name in RETENTIONS.builtins() or not replace):
        raise ValueError(
            f"retention {name!r} is already registered; registered: {RETENTIONS.available()}"
        )

    def deco(leaf_map: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
        if not callable(leaf_map):
            raise ValueError(f"retention {name!r}: the projection must be callable")
        RETENTIONS.register(name, lambda: leaf_map, replace=True, decays=bool(decays), options=())
        return leaf_map

    return deco


def unregister_retention(name: str) -> None:
    """Removes a retention added by :func:`register_retention` (built-ins stay)."""
    if name not in RETENTIONS or name in RETENTIONS.builtins():
        raise ValueError(f"retention {name!r} was not added by register_retention")
    RETENTIONS.unregister(name)
