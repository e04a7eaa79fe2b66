"""DeltaNet and Gated DeltaNet, registered as ``deltanet`` (``D``) and ``gated_deltanet`` (``G``).

Both write with the delta rule on L2-normalised keys (q, k, v pass a short causal conv with
SiLU first):

- DeltaNet (Yang et al. 2024): ``S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ``.
- Gated DeltaNet (Yang et al. 2025): ``S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ``
  with ``log α_t = −exp(A_log) · softplus(W_a x_t + dt_bias)``; A ~ U(0, 16) and
  ``dt_bias = softplus⁻¹(dt)``, dt log-uniform in [1e-3, 1e-1] (Mamba-2's initialisation).

``gate="mamba2"`` (default) is that decay; any other ``gate`` names a per-head decay gate
registered with :func:`memarch.layers.decay_gates.register_decay_gate`
(``log α_t = gate(x)_t``), which replaces ``W_a``, ``A_log`` and ``dt_bias`` (``dt_min``/``dt_max``
then do nothing).

``β_t = σ(W_β x_t)``, or ``2σ(·)`` with ``allow_neg_eigval`` (eigenvalues of the transition
in (−1, 1)). Output: ``o_proj(RMSNorm(o) ⊙ silu(W_g x))``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from memarch.layers import decay_gates
from memarch.layers.norms import l2_normalize
from memarch.mixers._recurrent import RecurrentConfig, RecurrentMixer
from memarch.mixers._registry import register
from memarch.ops import delta_rule, delta_rule_step, gated_delta_rule, gated_delta_rule_step


@dataclasses.dataclass(frozen=True)
class DeltaNetConfig(RecurrentConfig):
    allow_neg_eigval: bool = False  # β = 2σ(·) ∈ (0, 2) instead of σ(·) ∈ (0, 1)


@dataclasses.dataclass(frozen=True)
class GatedDeltaNetConfig(DeltaNetConfig):
    expand_v: float = 2.0  # value width per head = 2 · head_dim (flash-linear-attention default)
    dt_min: float = 1e-3  # smallest initial softplus step (decay rate)
    dt_max: float = 1e-1  # largest initial softplus step
    gate: str = "mamba2"  # the decay: Mamba-2's (built in) or a registered per-head gate's name

    def __post_init__(self):
        super().__post_init__()
        if self.gate != "mamba2":
            decay_gates.decay_gate_entry(self.gate, mixer="gated_deltanet")  # ValueError if unknown
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max; got {self.dt_min}, {self.dt_max}")


@register("deltanet", config=DeltaNetConfig, letter="D")
class DeltaNet(RecurrentMixer):
    """Delta-rule linear attention; write strength β from a per-head projection."""

    op = delta_rule
    step_op = delta_rule_step

    def __init__(self, config: DeltaNetConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        self.beta_proj = nnx.Linear(d_model, num_heads, use_bias=False, rngs=rngs)

    def memory_params(self) -> tuple[str, ...]:
        return super().memory_params() + ("beta_proj",)

    def feature_map(self, q, k):
        if self.conv is None:  # the conv applies SiLU; without it apply it here
            q, k = jax.nn.silu(q), jax.nn.silu(k)
        return l2_normalize(q), l2_normalize(k)

    def beta(self, x: jax.Array) -> jax.Array:
        b = jax.nn.sigmoid(self.beta_proj(x).astype(jnp.float32))
        return 2.0 * b if self.config.allow_neg_eigval else b

    def gates(self, x):
        return (self.beta(x),)


@register("gated_deltanet", config=GatedDeltaNetConfig, letter="G")
class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet: the delta rule with a Mamba-2 style per-head decay."""

    op = gated_delta_rule
    step_op = gated_delta_rule_step

    def __init__(
        self, config: GatedDeltaNetConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs
    ):
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        if config.gate != "mamba2":  # a registered gate
            self.decay_gate = decay_gates.build_decay_gate(
                config.gate,
                mixer="gated_deltanet",
                d_model=d_model,
                num_heads=num_heads,
                key_dim=self.key_dim,
                rngs=rngs,
            )
            return
        self.a_proj = nnx.Linear(d_model, num_heads, use_bias=False, rngs=rngs)
        a = jax.random.uniform(rngs.params(), (num_heads,), jnp.float32, 0.0, 16.0)
        self.A_log = nnx.Param(jnp.log(jnp.maximum(a, 1e-4)))
        u = jax.random.uniform(rngs.params(), (num_heads,), jnp.float32)
        dt = jnp.exp(
            u * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min)
        )
        dt = jnp.maximum(dt, 1e-4)
        self.dt_bias = nnx.Param(dt + jnp.log(-jnp.expm1(-dt)))  # softplus⁻¹(dt)

    def memory_params(self) -> tuple[str, ...]:
        # A_log and dt_bias (the decay's per-head constants) are shared by a mixture's memories
        gate = "a_proj" if self.config.gate == "mamba2" else "decay_gate"
        return super().memory_params() + (gate,)

    def gates(self, x):
        if self.config.gate != "mamba2":
            g = self.decay_gate(x)
            b, t, _ = x.shape
            decay_gates.check_decay_gate_output(
                self.config.gate,
                g,
                batch=b,
                length=t,
                num_heads=self.num_heads,
                key_dim=self.key_dim,
            )
            return (g, self.beta(x))
        a = self.a_proj(x).astype(jnp.float32) + self.dt_bias[...]
        g = -jnp.exp(self.A_log[...]) * jax.nn.softplus(a)  # log α ≤ 0, [B, T, H]
        return (g, self.beta(x))
