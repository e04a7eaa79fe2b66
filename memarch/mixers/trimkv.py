"""TRIM-KV (arXiv 2512.03324): attention with learned per-token retention gates.

Registered as ``trimkv`` (letter ``K``). A small gate MLP reads each token's (post-norm)
hidden state and emits one log retention per KV head::

    u_i = W₂·silu(W₁x_i + b₁) + b          log β_i = logsigmoid(u_i)   (float32)

with b initialised large (``gate_bias``, 18 in the paper) so that β ≈ 1 at the start. Training
adds the *additive* bias ``(t − i)·log β_i`` to the logits (weight ∝ ``β_i^{t−i} e^{q·k}``);
GQA query heads share their KV head's β. When ``capacity_budget`` M is set, the training
forward sows ``capacity_weight · L_cap`` (:func:`memarch.kvcache.capacity_loss`) as
``aux_loss``. ``use_retention_gates = False`` (see :func:`memarch.kvcache.trimkv_gates_enabled`)
drops the bias: the model becomes its own distillation teacher.

Decoding keeps ``log β`` and the position of every cached key. With
``eviction=RetentionEviction(budget=M)`` (:mod:`memarch.kvcache.policies`) the cache keeps the
M keys of highest ``(t − pos_i)·log β_i`` per KV head; any other policy may be used instead.
``decode_bias`` applies the same bias while decoding, so decode reproduces the training
forward exactly (the protocol invariant); set it False for the paper's inference mode (standard
attention, β used only to rank eviction).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from memarch.kvcache.losses import TRIMKV_GATE_NAME, capacity_loss
from memarch.mixers._decay_attention import DecayAttention, DecayAttentionConfig
from memarch.mixers._registry import register


@dataclasses.dataclass(frozen=True)
class TrimKVConfig(DecayAttentionConfig):
    gate_hidden: int = 512  # width of the retention gate MLP
    gate_bias: float = 18.0  # initial bias b of the gate: β = σ(b) ≈ 1
    capacity_budget: float | None = None  # M of the sown capacity loss; None = no loss
    capacity_weight: float = 1.0  # λ_cap
    decode_bias: bool = True  # apply (t − i)·log β_i while decoding too

    def __post_init__(self):
        super().__post_init__()
        if self.gate_hidden <= 0:
            raise ValueError(f"gate_hidden must be a positive int; got {self.gate_hidden}")
        if self.capacity_budget is not None and not self.capacity_budget > 0:
            raise ValueError(f"capacity_budget must be > 0 or None; got {self.capacity_budget}")


class RetentionGate(nnx.Module):
    """``x [B, T, D] -> log β [B, T, H_kv]`` (float32): ``logsigmoid(W₂ silu(W₁x + b₁) + b)``."""

    def __init__(self, d_model: int, hidden: int, num_kv_heads: int, bias: float, *, rngs):
        self.up = nnx.Linear(d_model, hidden, use_bias=True, rngs=rngs)
        self.down = nnx.Linear(hidden, num_kv_heads, use_bias=False, rngs=rngs)
        self.bias = nnx.Param(jnp.full((num_kv_heads,), bias, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        u = self.down(jax.nn.silu(self.up(x))).astype(jnp.float32) + self.bias[...]
        return jax.nn.log_sigmoid(u)


@register("trimkv", config=TrimKVConfig, letter="K")
class TrimKV(DecayAttention):
    """Attention with TRIM-KV retention gates; see module docstring."""

    def __init__(self, config: TrimKVConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        super().__init__(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
        setattr(
            self,
            TRIMKV_GATE_NAME,
            RetentionGate(
                d_model, config.gate_hidden, self.num_kv_heads, config.gate_bias, rngs=rngs
            ),
        )
        self.use_retention_gates = True

    def _gate_kinds(self):
        return False, True

    def _gates(self, x: jax.Array):
        return None, getattr(self, TRIMKV_GATE_NAME)(x)

    def _bias_slope(self, log_beta):
        if not self.use_retention_gates:
            return None
        return log_beta

    def _decode_bias_slope(self, log_beta):
        return self._bias_slope(log_beta) if self.config.decode_bias else None

    def _on_train_forward(self, log_beta, segment_ids) -> None:
        m = self.config.capacity_budget
        if m is not None and self.use_retention_gates:
            loss = self.config.capacity_weight * capacity_loss(
                log_beta, m, segment_ids, block_size=self.config.block_size
            )
            self.sow(nnx.Intermediate, "aux_loss", loss, capture_noop=True)
