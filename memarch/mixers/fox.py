"""Forgetting Transformer (FoX, arXiv 2503.02130): softmax attention with a forget gate.

Registered as ``fox`` (letter ``F``). Each query head has a scalar forget gate per token::

    f_t = σ(w_h·x_t + b_h)          Λ_t = Σ_{l ≤ t} log f_l           (float32, log space)
    o_t = Σ_{i ≤ t} softmax_i(q_t·k_i/√d + Λ_t − Λ_i) v_i

so key i is down-weighted by the product of the forget gates of every later token. RoPE is
optional (off by default: the gate already encodes recency). ``forget_tau = (τ_min, τ_max)``
initialises ``b_h = −log(expm1(1/τ_h))`` with τ log-spaced over heads (fixed-decay init,
``f = e^{−1/τ}`` at ``w = 0``); otherwise ``b = forget_bias``. With ``f ≡ 1`` this is plain
causal attention. Decoding caches Λ per key (:class:`memarch.kvcache.RetentionKVCache`);
``eviction`` bounds the cache (see :mod:`memarch.mixers._decay_attention`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch.mixers._decay_attention import DecayAttention, DecayAttentionConfig
from memarch.mixers._registry import register


@dataclasses.dataclass(frozen=True)
class FoxConfig(DecayAttentionConfig):
    rope: bool = False  # FoX needs no RoPE; True adds it
    forget_bias: float = 0.0  # initial bias b of the forget gate (f = σ(b) at w·x = 0)
    forget_tau: tuple[float, float] | None = None  # (τ_min, τ_max): fixed-decay bias init

    def __post_init__(self):
        super().__post_init__()
        if self.forget_tau is not None:
            lo, hi = self.forget_tau
            if not 0 < lo <= hi:
                raise ValueError(
                    f"forget_tau must be (τ_min, τ_max) with 0 < τ_min ≤ τ_max; got "
                    f"{self.forget_tau!r}"
                )


def fixed_decay_bias(num_heads: int, tau_min: float, tau_max: float) -> np.ndarray:
    """``b_h = −log(expm1(1/τ_h))`` so that ``σ(b_h) = e^{−1/τ_h}``, τ log-spaced over heads."""
    tau = np.geomspace(tau_min, tau_max, num_heads)
    return -np.log(np.expm1(1.0 / tau))


@register("fox", config=FoxConfig, letter="F")
class Fox(DecayAttention):
    """Forgetting attention; see module docstring."""

    def __init__(self, config: FoxConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        bias = (
            np.full((num_heads,), config.forget_bias)
            if config.forget_tau is None
            else fixed_decay_bias(num_heads, *config.forget_tau)
        )
        self.fgate = nnx.Linear(
            d_model,
            num_heads,
            use_bias=True,
            rngs=rngs,
            bias_init=lambda *_: jnp.asarray(bias, jnp.float32),
        )

    def _gate_kinds(self):
        return True, False

    def _gates(self, x: jax.Array):
        """log f ``[B, T, H]`` float32."""
        return jax.nn.log_sigmoid(self.fgate(x).astype(jnp.float32)), None

    def _bias_slope(self, log_beta):
        return None
