"""HGRN2 (Qin et al. 2024), registered as ``hgrn2`` (letter ``H``).

A gated linear RNN with state expansion, run on the GLA op:
``S_t = Diag(f_t) S_{t−1} + (1 − f_t) i_tᵀ``, ``o_t = S_tᵀ q_t``, where the forget gate
``f_t = exp(g_t)``, ``g_t = logsigmoid(W_f x_t)`` raised to a lower bound lb
(``g ← logaddexp(log lb, log1p(−lb) + g)``, i.e. ``f ← lb + (1 − lb) f``), the input gate is
tied as ``1 − f_t`` and plays the key's role, q = SiLU(W_q x) (SiLU from the short conv when
on), and the input ``i_t = W_i x_t`` is the value. The expansion is the key width per head
(``head_dim``). Output: ``o_proj(RMSNorm(o))``.

Options matching flash-linear-attention's HGRN2 layer (all off by default):

- ``conv_layout="qfi"``: the short conv runs over ``q | W_f x | i`` with no activation, then
  SiLU on q and logsigmoid on the convolved forget input (the default ``"qv_silu"`` convolves
  ``q | i`` with SiLU and computes the gate from ``x`` directly);
- ``norm_over="all"``: the output RMSNorm normalises all heads together (``H·V`` wide, one
  scale of that width) instead of each head;
- ``learned_lower_bound``: the lower bound is a learned per-channel vector ``lb [H·K]`` of the
  layer (initialised to ``forget_lower_bound``) instead of a constant. fla derives each
  layer's vector from one model-level parameter (a softmax over layers, cumulated); the
  converter (:mod:`memarch.convert`) turns that into the per-layer vectors and back.
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

CONV_LAYOUTS = ("qv_silu", "qfi")
NORM_OVER = ("head", "all")


@dataclasses.dataclass(frozen=True)
class HGRN2Config(RecurrentConfig):
    forget_lower_bound: float = 0.0  # lb in [0, 1): f ∈ (lb, 1); deeper layers use larger lb
    output_gate: bool = False  # HGRN2 normalises its output without a gate
    conv_layout: str = "qv_silu"  # qv_silu: conv(q | i) + SiLU; qfi: conv(q | f | i), no act
    norm_over: str = "head"  # output RMSNorm per head, or over all heads together
    learned_lower_bound: bool = False  # lb a learned per-channel vector [H·K] (fla's models)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.forget_lower_bound < 1.0:
            raise ValueError(f"forget_lower_bound must be in [0, 1); got {self.forget_lower_bound}")
        if self.conv_layout not in CONV_LAYOUTS:
            raise ValueError(
                f"conv_layout must be one of {list(CONV_LAYOUTS)}; got {self.conv_layout!r}"
            )
        if self.norm_over not in NORM_OVER:
            raise ValueError(f"norm_over must be one of {list(NORM_OVER)}; got {self.norm_over!r}")


@register("hgrn2", config=HGRN2Config, letter="H")
class HGRN2(RecurrentMixer):
    """HGRN2: forget gate f, input gate 1 − f as the key, state expansion ``head_dim``."""

    op = gla
    step_op = gla_step
    has_key_proj = False

    def __init__(self, config: HGRN2Config, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        if config.qk_heads not in (None, num_heads):
            raise ValueError(
                f"hgrn2 has no qk_heads option (shared q heads); got {config.qk_heads}"
            )
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        self.f_proj = nnx.Linear(d_model, num_heads * self.key_dim, use_bias=False, rngs=rngs)
        self.lower_bound = (
            nnx.Param(jnp.full((num_heads * self.key_dim,), config.forget_lower_bound, jnp.float32))
            if config.learned_lower_bound
            else None
        )

    @property
    def conv_activation(self) -> str:
        return "identity" if self.config.conv_layout == "qfi" else "silu"

    @property
    def _qfi(self) -> bool:
        return self.config.conv_layout == "qfi" and self.conv is not None

    @property
    def norm_dim(self) -> int:
        return self.value_dim * (self.num_heads if self.config.norm_over == "all" else 1)

    @property
    def conv_channels(self) -> int:
        """``H·(K + V)`` (q | i), or ``H·(2K + V)`` (q | f | i) with ``conv_layout="qfi"``."""
        nk = 2 if self.config.conv_layout == "qfi" else 1
        return self.num_heads * (nk * self.key_dim + self.value_dim)

    def memory_params(self) -> tuple[str, ...]:
        return ("v_proj", "f_proj")

    def keys_values(self, x: jax.Array) -> jax.Array:
        """``x [B, T, D]`` -> ``i`` (or ``f | i`` with the qfi conv layout) before the conv."""
        if self._qfi:
            return jnp.concatenate([self.f_proj(x), self.v_proj(x)], axis=-1)
        return self.v_proj(x)

    def split_heads(self, qkv):
        """Conv output -> ``q [..., H, K]``, the forget input ``[..., H, K]`` (qfi layout) or
        None, ``v [..., H, V]``."""
        if not self._qfi:
            return super().split_heads(qkv)
        h, dk, dv = self.num_heads, self.key_dim, self.value_dim
        lead = qkv.shape[:-1]
        q, f, v = jnp.split(qkv, [h * dk, 2 * h * dk], axis=-1)
        return q.reshape(*lead, h, dk), f.reshape(*lead, h, dk), v.reshape(*lead, h, dv)

    def _log_forget(self, f: jax.Array) -> jax.Array:
        """Forget-gate logits ``[..., H·K]`` -> ``g`` (log f, raised to the lower bound)."""
        g = jax.nn.log_sigmoid(f.astype(jnp.float32))
        if self.lower_bound is not None:
            lb = self.lower_bound[...]
            g = jnp.logaddexp(jnp.log(jnp.maximum(lb, 1e-30)), jnp.log1p(-lb) + g)
            return g
        lb = self.config.forget_lower_bound
        if lb > 0:
            g = jnp.logaddexp(math.log(lb), math.log1p(-lb) + g)
        return g

    def gates(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """``x [B, T, D] -> (g [B, T, H, K],)``: log forget gate, raised to the lower bound
        (none with the qfi conv layout: the gate comes from the convolved forget input)."""
        if self._qfi:
            return ()
        b, t, _ = x.shape
        g = self._log_forget(self.f_proj(x))
        return (g.reshape(b, t, self.num_heads, self.key_dim),)

    def features(self, q, k, v, gates):
        if self._qfi:  # k holds the convolved forget input
            lead = k.shape[:-1]
            g = self._log_forget(k.reshape(*lead[:-1], -1)).reshape(k.shape)
            gates = (g,)
            q = jax.nn.silu(q)
        else:
            (g,) = gates
            if self.conv is None:
                q = jax.nn.silu(q)
        k = (-jnp.expm1(g)).astype(q.dtype)  # 1 − f
        return q, k, v, gates
