"""Memory write gates: bounded, data-dependent θ, η, α, δ computed from the layer input.

Per head and token, from ``x [B, T, D]`` (one linear projection each, with a bias set so the
gate starts at its ``*_init`` value)::

    θ = theta_max · σ(W_θ x + b_θ)            step size (Titans θ, Miras η)
    η = momentum_max · σ(W_η x + b_η)         momentum (rule momentum only)
    α = σ(W_α x + b_α);  log γ = log σ(−z_α)  forget rate α, retention γ = 1 − α
                                              (per value channel with channelwise_forget)
    δ = softplus(W_δ x + b_δ)                 Huber threshold (learn_delta), else delta_init
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from memarch.memory.biases import uses_delta
from memarch.memory.config import MemoryConfig
from memarch.memory.engine import WriteGates, make_spec


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


class MemoryGates(nnx.Module):
    """``gates(x [B, T, D]) -> WriteGates`` for ``num_heads`` memories of value width ``dv``."""

    def __init__(
        self, config: MemoryConfig, *, d_model: int, num_heads: int, dv: int, rngs: nnx.Rngs
    ):
        self.config = config
        self.num_heads = num_heads
        spec = make_spec(config)
        h = num_heads

        def proj(out: int, bias: float):
            lin = nnx.Linear(
                d_model,
                out,
                use_bias=True,
                kernel_init=nnx.initializers.normal(0.02),
                bias_init=nnx.initializers.constant(bias),
                rngs=rngs,
            )
            return lin

        self.theta = proj(h, _logit(config.theta_init / config.theta_max))
        self.momentum = (
            proj(h, _logit(config.momentum_init / config.momentum_max)) if spec.momentum else None
        )
        self.forget = (
            proj(h * dv if config.channelwise_forget else h, _logit(config.forget_init))
            if spec.retention.decays
            else None
        )
        self.delta = (
            proj(h, math.log(math.expm1(config.delta_init)))
            if spec.uses_delta and config.learn_delta
            else None
        )
        self.dv = dv

    def __call__(self, x: jax.Array) -> WriteGates:
        b, t, _ = x.shape
        h, cfg = self.num_heads, self.config
        f32 = lambda m: m(x).astype(jnp.float32)  # noqa: E731
        lr = cfg.theta_max * jax.nn.sigmoid(f32(self.theta))
        log_mom = None
        if self.momentum is not None:
            log_mom = math.log(cfg.momentum_max) + jax.nn.log_sigmoid(f32(self.momentum))
        log_keep = None
        if self.forget is not None:
            log_keep = jax.nn.log_sigmoid(-f32(self.forget))
            if cfg.channelwise_forget:
                log_keep = log_keep.reshape(b, t, h, self.dv)
        delta = None
        if self.delta is not None:
            delta = jax.nn.softplus(f32(self.delta))
        elif uses_delta(cfg.bias):
            delta = jnp.full((b, t, h), cfg.delta_init, jnp.float32)
        return WriteGates(lr=lr, log_momentum=log_mom, log_keep=log_keep, delta=delta)
