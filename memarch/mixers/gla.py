"""Gated linear attention (GLA, Yang et al. 2024), registered as ``gla`` (letter ``R``).

``S_t = Diag(exp(g_t)) S_{t−1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t / √K``, then
``o_proj(RMSNorm(o) ⊙ silu(W_g x))``. The log decay is a low-rank projection
``g_t = logsigmoid(W₂ W₁ x_t + b₂) / τ`` (rank 16, τ = 16 as in flash-linear-attention),
optionally clamped below; ``gate="head"`` gives one decay per head (the RetNet / Mamba-2 style
scalar gate) instead of one per key channel; any other ``gate`` names a decay gate registered
with :func:`memarch.layers.decay_gates.register_decay_gate`, which then replaces the low-rank
projection (the ``gate_*`` options apply to the two built-ins only). Unlike FLA's default, the
short conv is on (kernel 4), as in every mixer of this family here; set ``short_conv=0`` for
the original.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from memarch.layers import decay_gates
from memarch.mixers._recurrent import RecurrentConfig, RecurrentMixer
from memarch.mixers._registry import register
from memarch.ops import gla, gla_step

GATES = ("channel", "head")


@dataclasses.dataclass(frozen=True)
class GLAConfig(RecurrentConfig):
    # decay per key channel (GLA), per head (scalar, Mamba-2 style), or a registered gate's name
    gate: str = "channel"
    gate_rank: int = 16  # rank of the gate projection W₂W₁
    gate_normalizer: float = 16.0  # τ in g = logsigmoid(·)/τ (larger = slower forgetting)
    gate_clamp_min: float | None = None  # lower bound on g (None = unbounded)
    # initial b₂: 0 (FLA) starts at exp(logσ(0)/τ) ≈ 0.958 per token (τ = 16); larger values
    # start nearer 1 (slow forgetting), e.g. 4 → 0.9989, a half-life of ~600 tokens
    gate_bias_init: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.gate not in GATES:
            decay_gates.decay_gate_entry(self.gate, mixer="gla")  # ValueError naming accepted
        if self.gate_rank < 1:
            raise ValueError(f"gate_rank must be >= 1; got {self.gate_rank}")
        if self.gate_normalizer <= 0:
            raise ValueError(f"gate_normalizer must be > 0; got {self.gate_normalizer}")


@register("gla", config=GLAConfig, letter="R")
class GLA(RecurrentMixer):
    """Gated linear attention with a low-rank, data-dependent forget gate."""

    op = gla
    step_op = gla_step

    def __init__(self, config: GLAConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        if config.gate not in GATES:  # a registered gate
            self.decay_gate = decay_gates.build_decay_gate(
                config.gate,
                mixer="gla",
                d_model=d_model,
                num_heads=num_heads,
                key_dim=self.key_dim,
                rngs=rngs,
            )
            return
        width = num_heads * (self.key_dim if config.gate == "channel" else 1)
        self.gate_down = nnx.Linear(d_model, config.gate_rank, use_bias=False, rngs=rngs)
        self.gate_up = nnx.Linear(
            config.gate_rank,
            width,
            use_bias=True,
            bias_init=nnx.initializers.constant(config.gate_bias_init),
            rngs=rngs,
        )

    def memory_params(self) -> tuple[str, ...]:
        gate = ("decay_gate",) if self.config.gate not in GATES else ("gate_down", "gate_up")
        return super().memory_params() + gate

    def gates(self, x: jax.Array) -> tuple[jax.Array]:
        b, t, _ = x.shape
        if self.config.gate not in GATES:
            g = self.decay_gate(x)
            decay_gates.check_decay_gate_output(
                self.config.gate,
                g,
                batch=b,
                length=t,
                num_heads=self.num_heads,
                key_dim=self.key_dim,
            )
            return (g,)
        logits = self.gate_up(self.gate_down(x)).astype(jnp.float32)
        g = jax.nn.log_sigmoid(logits) / self.config.gate_normalizer
        if self.config.gate_clamp_min is not None:
            g = jnp.maximum(g, self.config.gate_clamp_min)
        shape = (
            (b, t, self.num_heads, self.key_dim)
            if self.config.gate == "channel"
            else (b, t, self.num_heads)
        )
        return (g.reshape(shape),)
