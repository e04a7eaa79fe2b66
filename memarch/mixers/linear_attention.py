"""Plain (ungated) linear attention, registered as ``linear_attention`` (letter ``L``).

``S_t = S_{t−1} + φ(k_t) v_tᵀ``, ``o_t = S_tᵀ φ(q_t) / √K``, followed by a per-head RMSNorm
(which replaces the unstable ``φ(q)ᵀz`` denominator, as in flash-linear-attention) and the
output projection. φ is the feature map (``elu1`` = elu + 1 of Katharopoulos et al. 2020).
"""

from __future__ import annotations

import dataclasses

import jax

from memarch.mixers._recurrent import RecurrentConfig, RecurrentMixer
from memarch.mixers._registry import register
from memarch.ops import linear_attention, linear_attention_step

FEATURE_MAPS = {
    "identity": lambda x: x,
    "elu1": lambda x: jax.nn.elu(x) + 1.0,
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class LinearAttentionConfig(RecurrentConfig):
    feature_map: str = "elu1"  # φ applied to q and k: identity | elu1 | relu
    output_gate: bool = False  # plain linear attention: o_proj(RMSNorm(o))

    def __post_init__(self):
        super().__post_init__()
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(
                f"feature_map must be one of {sorted(FEATURE_MAPS)}; got {self.feature_map!r}"
            )


@register("linear_attention", config=LinearAttentionConfig, letter="L")
class LinearAttention(RecurrentMixer):
    """Ungated linear attention with a short conv and an output RMSNorm."""

    op = linear_attention
    step_op = linear_attention_step

    def feature_map(self, q, k):
        phi = FEATURE_MAPS[self.config.feature_map]
        return phi(q), phi(k)
