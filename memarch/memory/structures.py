"""Memory structures: what the memory *is* (its fast weights) and how it maps a key to a value.

A structure is a pair of pure functions over one memory stream (one batch row, one head):

- ``init(key, dk, dv) -> params``: a pytree of fast weights (the memory's initial value; the
  mixer learns one per head);
- ``apply(params, x [dk]) -> [dv]``: the memory read ``M(x)``.

Structures whose weights are all matrices used only through products ``W h`` also give
``layers(matmul, x [..., dk]) -> [..., dv]``: the read written against a callback
``matmul(name, h [..., in]) -> [..., out]`` that stands for ``h @ params[name]ᵀ``. The engine
then reads per-token weights ``W_t = ρ_t W₀ + … − Σ_j G[t, j] g_j h_jᵀ`` without materialising
them (the dual form); ``apply`` is ``layers`` with the plain product.

Registered structures (:func:`make_structure` by name):

- ``linear``: ``M(x) = W x`` with ``W [dv, dk]`` (the linear-attention family's matrix memory).
- ``mlp``: Titans' deep memory. Depth L ≥ 1, hidden width ``expansion · dk``, activation σ::

      h_0 = x;  h_i = σ(W_i h_{i-1}) (i < L);  m = W_L h_{L-1}
      M(x) = x + LN(m)      (residual + parameter-free LayerNorm, needs dk == dv)
      M(x) = m              (residual=False)

  Depth 1 is a residual linear memory; Titans' default is depth 2, expansion 4, GELU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from memarch.registry import Registry

ACTIVATIONS: Registry[Callable[[jax.Array], jax.Array]] = Registry("activation")
ACTIVATIONS.register("gelu", jax.nn.gelu)
ACTIVATIONS.register("silu", jax.nn.silu)
ACTIVATIONS.register("tanh", jnp.tanh)
ACTIVATIONS.register("relu", jax.nn.relu)
ACTIVATIONS.seal()


@dataclasses.dataclass(frozen=True)
class Structure:
    """A memory structure: ``init(key, dk, dv) -> params``; ``apply(params, x[dk]) -> [dv]``.

    ``layers`` (optional, see the module docstring) lets the engine use the dual form;
    ``linear`` is True for the matrix memory ``M(x) = W x``.
    """

    name: str
    init: Callable[[jax.Array, int, int], Any]
    apply: Callable[[Any, jax.Array], jax.Array]
    linear: bool = False
    layers: Callable[[Callable[[str, jax.Array], jax.Array], jax.Array], jax.Array] | None = None


def _from_layers(name: str, init: Callable, layers: Callable, **kw: Any) -> Structure:
    """A structure whose ``apply`` is ``layers`` with the plain product ``h @ params[n]ᵀ``."""

    def apply(params, x):
        return layers(lambda n, h: h @ params[n].T, x)

    return Structure(name, init, apply, layers=layers, **kw)


def _layer_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    mu = jnp.mean(x, -1, keepdims=True)
    xc = x - mu
    return xc * jax.lax.rsqrt(jnp.mean(xc * xc, -1, keepdims=True) + eps)


def linear_structure() -> Structure:
    """``M(x) = W x``; W initialised to zero (an empty memory)."""

    def init(key, dk, dv):
        del key
        return {"W": jnp.zeros((dv, dk), jnp.float32)}

    def layers(matmul, x):
        return matmul("W", x)

    return _from_layers("linear", init, layers, linear=True)


def mlp_structure(
    depth: int = 2, expansion: float = 4.0, activation: str = "gelu", residual: bool = True
) -> Structure:
    """Titans' MLP memory (see the module docstring); weights ``W_i [out, in]``, He-scaled."""
    act = ACTIVATIONS.choice("activation", activation)

    def init(key, dk, dv):
        if residual and dk != dv:
            raise ValueError(f"a residual MLP memory needs key width == value width; {dk} != {dv}")
        hidden = max(1, int(round(expansion * dk)))
        dims = [dk] + [hidden] * (depth - 1) + [dv]
        keys = jax.random.split(key, depth)
        return {
            f"W{i}": jax.random.normal(keys[i], (dims[i + 1], dims[i]), jnp.float32)
            * dims[i] ** -0.5
            for i in range(depth)
        }

    def layers(matmul, x):
        h = x
        for i in range(depth - 1):
            h = act(matmul(f"W{i}", h))
        m = matmul(f"W{depth - 1}", h)
        return x + _layer_norm(m) if residual else m

    return _from_layers("mlp", init, layers)


# name -> factory; metadata ``options``: the factory's keyword options (MemoryConfig fields)
STRUCTURES: Registry[Callable[..., Structure]] = Registry("memory structure")
STRUCTURES.register("linear", linear_structure, options=())
STRUCTURES.register("mlp", mlp_structure, options=("depth", "expansion", "activation", "residual"))
STRUCTURES.seal()


def make_structure(name: str, **options: Any) -> Structure:
    """The structure called ``name`` (``linear`` | ``mlp`` | registered); ``options`` go to
    its factory, those it does not declare in its ``options`` metadata are ignored."""
    factory = STRUCTURES.choice("structure", name)
    accepted = STRUCTURES.metadata(name)["options"]
    return factory(**{k: v for k, v in options.items() if k in accepted})
