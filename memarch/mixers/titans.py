"""Neural-memory mixers: Titans' long-term memory (LMM) and the Miras models as one layer.

Registered names (each is a configuration of :mod:`memarch.memory`):

| name            | structure        | bias              | retention           | rule     |
|-----------------|------------------|-------------------|---------------------|----------|
| ``neural_memory`` | any (linear)   | any (l2)          | any (decay)         | any (momentum) |
| ``titans_lmm`` (T) | MLP, depth 2  | l2                | decay α             | momentum |
| ``moneta``      | MLP, depth 2     | lp, p = 3         | lq, q = 4 (+ decay) | gd       |
| ``yaad``        | MLP, depth 2     | huber_norm, δ_t   | decay               | gd       |
| ``memora``      | MLP, depth 2     | l2                | kl_softmax (+ decay)| gd       |

Layer (Titans' block without the MLP): ``q, k, v = SiLU(conv(W_q x)), …`` (depthwise causal conv
of kernel ``short_conv`` with SiLU), q and k L2-normalised per head; the memory (one per head,
learned per-head initial weights) writes (k_t, v_t) with token-level gates θ_t, η_t, α_t (δ_t)
from :class:`memarch.memory.MemoryGates` and reads ``o_t = M_t(q_t)`` after the write; output
``o_proj(RMSNorm(o) ⊙ silu(W_g x))`` (or ``o_proj(RMSNorm(o))``).

``chunk_size`` is part of the model (gradients inside a chunk are taken at the chunk-start
memory): evaluate at the chunk size the model was trained with. Decode cache:
:class:`MemoryCache` (memory weights, momentum, chunk anchor, position; the short conv's inputs).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from memarch.layers.norms import GatedRMSNorm, RMSNorm, l2_normalize
from memarch.layers.short_conv import ShortConv
from memarch.memory import MemoryConfig, MemoryGates, MemoryState, initial_state, make_spec
from memarch.memory.engine import memory_forward
from memarch.mixers._registry import register
from memarch.mixers.protocol import check_call


@dataclasses.dataclass(frozen=True)
class NeuralMemoryConfig(MemoryConfig):
    """The memory's four choices (see :class:`MemoryConfig`) plus the layer around it."""

    head_dim: int | None = None  # key = value width per head; None = d_model // num_heads
    short_conv: int = 4  # causal depthwise conv (with SiLU) on q, k, v; 0 = SiLU only
    output_gate: bool = True  # o_proj(RMSNorm(o) ⊙ silu(W_g x)) instead of o_proj(RMSNorm(o))

    def __post_init__(self):
        super().__post_init__()
        if self.short_conv < 0:
            raise ValueError(f"short_conv must be >= 0 (0 disables); got {self.short_conv}")
        if self.head_dim is not None and self.head_dim <= 0:
            raise ValueError(f"head_dim must be a positive int or None; got {self.head_dim}")


@dataclasses.dataclass(frozen=True)
class TitansLMMConfig(NeuralMemoryConfig):
    structure: str = "mlp"  # Titans: M(x) = x + LN(W₁σ(W₂x)), depth 2, expansion 4, GELU
    rule: str = "momentum"  # surprise with momentum


@dataclasses.dataclass(frozen=True)
class MonetaConfig(NeuralMemoryConfig):
    structure: str = "mlp"  # Miras shared set-up: MLP memory
    bias: str = "lp"  # ℓ_p attentional bias
    p: float = 3.0  # the paper's best exponent
    retention: str = "lq"  # A_t = γA_{t−1} − θ∇; W = A/‖A‖_q^{q−2}
    # q = 4 (the paper's): W ∝ 1/scale(A), so a large θ lets A run away behind the memory's
    # LayerNorm; small MQAR models need θ_max ≈ 0.03 (configs/mqar_titans_small.py)
    q: float = 4.0
    rule: str = "gd"  # plain gradient descent


@dataclasses.dataclass(frozen=True)
class YaadConfig(NeuralMemoryConfig):
    structure: str = "mlp"
    bias: str = "huber_norm"  # ℓ2 step if ‖M(k) − v‖ ≤ δ_t, else δ_t × the normalised step
    retention: str = "decay"
    rule: str = "gd"


@dataclasses.dataclass(frozen=True)
class MemoraConfig(NeuralMemoryConfig):
    structure: str = "mlp"
    bias: str = "l2"
    retention: str = "kl_softmax"  # W = n·softmax(A) per n-wide weight row (KL retention)
    rule: str = "gd"


@struct.dataclass
class MemoryCache:
    """``state`` the memory's :class:`MemoryState`; ``conv [B, W − 1, 3·H·d]`` or None;
    ``length`` int32 tokens seen."""

    state: MemoryState
    conv: jax.Array | None
    length: jax.Array


@register("neural_memory", config=NeuralMemoryConfig)
class NeuralMemory(nnx.Module):
    """A neural-memory layer; every choice comes from the config (see the module docstring)."""

    def __init__(self, config: NeuralMemoryConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        if config.head_dim is None and d_model % num_heads:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by num_heads ({num_heads}), or set head_dim"
            )
        self.config = config
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d = config.head_dim or d_model // num_heads
        self.spec = make_spec(config)
        h = num_heads
        self.qkv_proj = nnx.Linear(d_model, 3 * h * d, use_bias=False, rngs=rngs)
        self.conv = (
            ShortConv(3 * h * d, config.short_conv, rngs=rngs) if config.short_conv else None
        )
        self.gates = MemoryGates(config, d_model=d_model, num_heads=h, dv=d, rngs=rngs)
        keys = jax.random.split(rngs.params(), h)
        init = jax.vmap(lambda k: self.spec.structure.init(k, d, d))(keys)  # leaves [H, ...]
        self.memory_names = tuple(sorted(init))
        for n in self.memory_names:  # one Param per weight of the memory, leaves [H, ...]
            setattr(self, f"memory_init_{n}", nnx.Param(init[n]))
        if config.output_gate:
            self.g_proj = nnx.Linear(d_model, h * d, use_bias=False, rngs=rngs)
            self.o_norm = GatedRMSNorm(d, rngs=rngs)
        else:
            self.o_norm = RMSNorm(d, rngs=rngs)
        self.o_proj = nnx.Linear(h * d, d_model, use_bias=False, rngs=rngs)

    def initial_memory(self) -> dict[str, jax.Array]:
        """The learned per-head initial memory, leaves ``[H, ...]``."""
        return {n: getattr(self, f"memory_init_{n}")[...] for n in self.memory_names}

    def init_cache(self, batch_size: int, max_len: int, dtype: Any = jnp.float32) -> MemoryCache:
        del max_len  # constant-size state
        return MemoryCache(
            state=initial_state(self.spec, self.initial_memory(), batch_size),
            conv=None if self.conv is None else self.conv.init_cache(batch_size, dtype),
            length=jnp.zeros((), jnp.int32),
        )

    def qkv(self, x: jax.Array, *, segment_ids=None, conv_cache=None):
        """``x [B, T, D]`` → q, k (L2-normalised), v ``[B, T, H, d]`` and the conv cache."""
        b, t, _ = x.shape
        qkv = self.qkv_proj(x)
        if self.conv is not None:
            qkv, conv_cache = self.conv(qkv, segment_ids=segment_ids, cache=conv_cache)
        else:
            qkv = jax.nn.silu(qkv)
        q, k, v = jnp.split(qkv.reshape(b, t, 3 * self.num_heads, self.head_dim), 3, axis=2)
        return l2_normalize(q), l2_normalize(k), v, conv_cache

    def __call__(
        self,
        x: jax.Array,
        *,
        cache: MemoryCache | None = None,
        segment_ids: jax.Array | None = None,
    ) -> tuple[jax.Array, MemoryCache | None]:
        check_call(x, self.d_model, cache, segment_ids)
        b, t, _ = x.shape
        h, d = self.num_heads, self.head_dim
        q, k, v, conv_cache = self.qkv(
            x, segment_ids=segment_ids, conv_cache=None if cache is None else cache.conv
        )
        impl = self.config.impl
        if cache is not None and t == 1 and impl == "auto":
            impl = "naive"  # one decode step (token by token)
        o, state = memory_forward(
            self.spec,
            self.initial_memory(),
            q,
            k,
            v,
            self.gates(x),
            state=None if cache is None else cache.state,
            segment_ids=segment_ids,
            impl=impl,
        )
        if self.config.output_gate:
            o = self.o_norm(o, self.g_proj(x).reshape(b, t, h, d))
        else:
            o = self.o_norm(o)
        y = self.o_proj(o.reshape(b, t, h * d))
        new_cache = None
        if cache is not None:
            new_cache = MemoryCache(state=state, conv=conv_cache, length=cache.length + t)
        return y, new_cache


@register("titans_lmm", config=TitansLMMConfig, letter="T")
class TitansLMM(NeuralMemory):
    """Titans' long-term memory as a layer (deep MLP memory, momentum, decay)."""


@register("moneta", config=MonetaConfig)
class Moneta(NeuralMemory):
    """Miras Moneta: ℓ_p bias (p = 3), ℓ_q-normalised retention (q = 4), gradient descent."""


@register("yaad", config=YaadConfig)
class Yaad(NeuralMemory):
    """Miras Yaad: Huber bias with a learned, token-level threshold δ_t; decay; GD."""


@register("memora", config=MemoraConfig)
class Memora(NeuralMemory):
    """Miras Memora: ℓ2 bias, KL retention (memory rows on the scaled simplex), GD."""
