"""``MemoryConfig``: the four choices that define an associative memory, validated up front.

Every invalid value raises ``ValueError`` naming the field and what is accepted, so a config
file fails when it is built rather than deep inside a jitted scan.
"""

from __future__ import annotations

import dataclasses

from memarch.memory.biases import BIASES
from memarch.memory.retention import RETENTIONS
from memarch.memory.rules import RULES
from memarch.memory.structures import ACTIVATIONS, STRUCTURES
from memarch.ops import IMPLS_NO_PALLAS, check_impl

IMPLS = IMPLS_NO_PALLAS  # naive (token by token) | chunk (parallel within chunks) | auto


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """Structure × attentional bias × retention × learning rule, plus the write-gate ranges.

    Gates (token-level, data-dependent, bounded; see :mod:`memarch.memory.write_gates`):
    ``θ = theta_max·σ(·)`` (step size), ``η = momentum_max·σ(·)`` (momentum),
    ``α = σ(·)`` (forget rate; retention γ = 1 − α), ``δ = softplus(·)`` (Huber threshold).
    The ``*_init`` fields are their values at initialisation (through the projection biases).
    """

    structure: str = "linear"  # memory structure: linear | mlp
    depth: int = 2  # mlp: number of weight matrices (>= 1)
    expansion: float = 4.0  # mlp: hidden width = expansion · key width
    activation: str = "gelu"  # mlp: hidden activation (gelu | silu | tanh | relu)
    residual: bool = True  # mlp: M(x) = x + LN(mlp(x)) (Titans) instead of mlp(x)
    bias: str = "l2"  # attentional bias (inner loss): dot | l2 | lp | huber | huber_norm
    p: float = 3.0  # lp bias exponent (>= 1)
    retention: str = "decay"  # retention: none | decay | lq | kl_softmax | elastic_net
    q: float = 4.0  # lq retention exponent (> 1)
    simplex_scale: float | None = None  # kl_softmax: rows sum to this (None: to the row length)
    threshold: float = 1e-3  # elastic_net soft threshold γ (> 0)
    channelwise_forget: bool = False  # forget gate per value channel (linear memory only)
    rule: str = "momentum"  # learning rule: gd | momentum
    chunk_size: int = 16  # tokens whose gradients share one anchor memory (part of the model)
    theta_init: float = 0.1  # initial inner step size θ
    theta_max: float = 1.0  # θ = theta_max · σ(·); must be < 2 (an l2 write overshoots at 2)
    momentum_init: float = 0.5  # initial momentum η
    momentum_max: float = 0.9  # η = momentum_max · σ(·); must be < 1
    forget_init: float = 0.01  # initial forget rate α (retention γ = 1 − α)
    delta_init: float = 1.0  # initial Huber threshold δ
    learn_delta: bool = True  # δ from a projection (Yaad) instead of the fixed delta_init
    max_grad_norm: float | None = None  # soft-clamp each token's gradient norm (None = off)
    remat: bool = True  # rematerialise each chunk in the backward pass (store only chunk ends)
    impl: str = "auto"  # naive (token by token) | chunk (parallel within chunks) | auto

    def __post_init__(self):
        def one_of(field, value, accepted):
            if value not in accepted:
                raise ValueError(f"{field} must be one of {sorted(accepted)}; got {value!r}")

        one_of("structure", self.structure, STRUCTURES)
        one_of("bias", self.bias, BIASES)
        one_of("retention", self.retention, RETENTIONS)
        one_of("rule", self.rule, RULES)
        one_of("activation", self.activation, ACTIVATIONS)
        check_impl(self.impl, IMPLS)
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"depth (mlp memory layers) must be an int >= 1; got {self.depth!r}")
        if not self.expansion > 0:
            raise ValueError(f"expansion must be > 0; got {self.expansion}")
        if not self.p >= 1.0:
            raise ValueError(f"p (the lp bias exponent) must be >= 1; got {self.p}")
        if not self.q > 1.0:
            raise ValueError(f"q (the lq retention exponent) must be > 1; got {self.q}")
        if self.simplex_scale is not None and not self.simplex_scale > 0:
            raise ValueError(f"simplex_scale must be > 0 or None; got {self.simplex_scale}")
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0; got {self.threshold}")
        if (
            not isinstance(self.chunk_size, int)
            or isinstance(self.chunk_size, bool)
            or self.chunk_size <= 0
        ):
            raise ValueError(f"chunk_size must be a positive int; got {self.chunk_size!r}")
        if not 0 < self.theta_max < 2:
            raise ValueError(
                f"theta_max must be in (0, 2): with unit-norm keys an l2 write "
                f"W ← W − θ(Wk − v)kᵀ diverges by construction once θ >= 2; got {self.theta_max}"
            )
        if not 0 < self.theta_init < self.theta_max:
            raise ValueError(
                f"theta_init must be in (0, theta_max={self.theta_max}); got {self.theta_init}"
            )
        if not 0 < self.momentum_max < 1:
            raise ValueError(
                "momentum_max must be in (0, 1): with η >= 1 the surprise S_t = ηS_{t−1} − θu "
                f"never decays and the memory diverges; got {self.momentum_max}"
            )
        if not 0 < self.momentum_init < self.momentum_max:
            raise ValueError(
                f"momentum_init must be in (0, momentum_max={self.momentum_max}); "
                f"got {self.momentum_init}"
            )
        if not 0 < self.forget_init < 1:
            raise ValueError(f"forget_init must be in (0, 1); got {self.forget_init}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None; got {self.max_grad_norm}")
        if not self.delta_init > 0:
            raise ValueError(f"delta_init must be > 0; got {self.delta_init}")
        if self.channelwise_forget and self.structure != "linear":
            raise ValueError(
                "channelwise_forget needs structure='linear' (a per value-channel decay of W); "
                f"got structure={self.structure!r}"
            )
