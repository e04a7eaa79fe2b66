"""Plain (ungated) linear attention, registered as ``linear_attention`` (letter ``L``).

``S_t = S_{t−1} + φ(k_t) v_tᵀ``, ``o_t = S_tᵀ φ(q_t) / √K``, followed by a per-head RMSNorm
(which replaces the unstable ``φ(q)ᵀz`` denominator, as in flash-linear-attention) and the
output projection. φ is the feature map (``elu1`` = elu + 1 of Katharopoulos et al. 2020;
``hadamard`` = the learned ``φ(x) = (W₁x + b₁) ⊙ (W₂x + b₂)`` over one head's K channels,
shared by the heads, one map for q and one for k: flash-linear-attention's default
``elementwise_product``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from memarch.mixers._recurrent import RecurrentConfig, RecurrentMixer
from memarch.mixers._registry import register
from memarch.ops import linear_attention, linear_attention_step

FEATURE_MAPS = {
    "identity": lambda x: x,
    "elu1": lambda x: jax.nn.elu(x) + 1.0,
    "relu": jax.nn.relu,
}
LEARNED_FEATURE_MAPS = ("hadamard",)


@dataclasses.dataclass(frozen=True)
class LinearAttentionConfig(RecurrentConfig):
    feature_map: str = "elu1"  # φ applied to q and k: identity | elu1 | relu | hadamard
    output_gate: bool = False  # plain linear attention: o_proj(RMSNorm(o))
    # divide each read by its normaliser, o_t = φ(q_t)ᵀS_t / (φ(q_t)ᵀz_t + 1e-10) with
    # z_t = Σ_{s≤t} φ(k_s) (both scaled by 1/√K; fla's norm_feature_map); the state carries z
    # as one extra value column, [H, K, V + 1]
    normalize: bool = False

    def __post_init__(self):
        super().__post_init__()
        accepted = sorted(FEATURE_MAPS) + list(LEARNED_FEATURE_MAPS)
        if self.feature_map not in accepted:
            raise ValueError(f"feature_map must be one of {accepted}; got {self.feature_map!r}")


@register("linear_attention", config=LinearAttentionConfig, letter="L")
class LinearAttention(RecurrentMixer):
    """Ungated linear attention with a short conv and an output RMSNorm."""

    op = linear_attention
    step_op = linear_attention_step

    def __init__(
        self, config: LinearAttentionConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs
    ):
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        if config.feature_map == "hadamard":
            self.feature_map_q = HadamardFeatureMap(self.key_dim, rngs=rngs)
            self.feature_map_k = HadamardFeatureMap(self.key_dim, rngs=rngs)

    def features(self, q, k, v, gates):
        q, k, v, gates = super().features(q, k, v, gates)
        if self.config.normalize:  # a column of ones accumulates z = Σ φ(k) in the state
            v = jnp.concatenate([v, jnp.ones((*v.shape[:-1], 1), v.dtype)], axis=-1)
        return q, k, v, gates

    def output(self, x, o):
        if self.config.normalize:
            o = o[..., :-1] / (o[..., -1:] + 1e-10)
        return super().output(x, o)

    def init_cache(self, batch_size, max_len, dtype=jnp.float32):
        cache = super().init_cache(batch_size, max_len, dtype)
        if not self.config.normalize:
            return cache
        state = jnp.zeros((*cache.state.shape[:-1], self.value_dim + 1), jnp.float32)
        return cache.replace(state=state)

    def feature_map(self, q, k):
        if self.config.feature_map == "hadamard":
            return self.feature_map_q(q), self.feature_map_k(k)
        phi = FEATURE_MAPS[self.config.feature_map]
        return phi(q), phi(k)


class HadamardFeatureMap(nnx.Module):
    """``φ(x) = (W₁x + b₁) ⊙ (W₂x + b₂)``: ``[..., K] -> [..., K]`` (per head, shared)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.layer1 = nnx.Linear(dim, dim, use_bias=True, rngs=rngs)
        self.layer2 = nnx.Linear(dim, dim, use_bias=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.layer1(x) * self.layer2(x)
