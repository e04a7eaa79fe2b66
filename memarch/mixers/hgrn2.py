"""HGRN2 (Qin et al. 2024), registered as ``hgrn2`` (letter ``H``).

A gated linear RNN with state expansion, run on the GLA op:
``S_t = Diag(f_t) S_{t−1} + (1 − f_t) i_tᵀ``, ``o_t = S_tᵀ q_t``, where the forget gate
``f_t = exp(g_t)``, ``g_t = logsigmoid(W_f x_t)`` raised to a lower bound lb
(``g ← logaddexp(log lb, log1p(−lb) + g)``, i.e. ``f ← lb + (1 − lb) f``), the input gate is
tied as ``1 − f_t`` and plays the key's role, q = SiLU(W_q x) (SiLU from the short conv when
on), and the input ``i_t = W_i x_t`` is the value. The expansion is the key width per head
(``head_dim``). Output: ``o_proj(RMSNorm(o))``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from memarch.mixers._recurrent import RecurrentConfig, RecurrentMixer
from memarch.mixers._registry import register
from memarch.ops import gla, gla_step


@dataclasses.dataclass(frozen=True)
class HGRN2Config(RecurrentConfig):
    forget_lower_bound: float = 0.0  # lb in [0, 1): f ∈ (lb, 1); deeper layers use larger lb
    output_gate: bool = False  # HGRN2 normalises its output without a gate

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.forget_lower_bound < 1.0:
            raise ValueError(f"forget_lower_bound must be in [0, 1); got {self.forget_lower_bound}")


@register("hgrn2", config=HGRN2Config, letter="H")
class HGRN2(RecurrentMixer):
    """HGRN2: forget gate f, input gate 1 − f as the key, state expansion ``head_dim``."""

    op = gla
    step_op = gla_step
    has_key_proj = False

    def __init__(self, config: HGRN2Config, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        self.f_proj = nnx.Linear(d_model, num_heads * self.key_dim, use_bias=False, rngs=rngs)

    def memory_params(self) -> tuple[str, ...]:
        return ("v_proj", "f_proj")

    def gates(self, x: jax.Array) -> tuple[jax.Array]:
        """``x [B, T, D] -> (g [B, T, H, K],)``: log forget gate, raised to the lower bound."""
        b, t, _ = x.shape
        g = jax.nn.log_sigmoid(self.f_proj(x).astype(jnp.float32))
        lb = self.config.forget_lower_bound
        if lb > 0:
            g = jnp.logaddexp(math.log(lb), math.log1p(-lb) + g)
        return (g.reshape(b, t, self.num_heads, self.key_dim),)

    def features(self, q, k, v, gates):
        del k  # HGRN2 derives its key from the forget gate
        (g,) = gates
        if self.conv is None:
            q = jax.nn.silu(q)
        k = (-jnp.expm1(g)).astype(q.dtype)  # 1 − f
        return q, k, v, gates
