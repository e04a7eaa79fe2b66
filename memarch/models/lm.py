"""Language model over a hybrid stack of mixers.

``tokens [B, T] -> embed -> L × (x + mixer(norm(x)); x + MLP(norm(x))) -> norm -> logits``.
The mixer of each layer comes from a layer pattern (see :mod:`memarch.models.pattern`); any
registered mixer may appear in any layer. The head is tied to the embedding or separate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from memarch import mixers
from memarch.layers.mlp import SwiGLU
from memarch.layers.norms import RMSNorm
from memarch.models.pattern import parse_pattern, ratio_pattern


@dataclasses.dataclass(frozen=True)
class LMConfig:
    vocab_size: int = 256  # tokens in the vocabulary
    d_model: int = 64  # residual stream width
    num_heads: int = 4  # heads of every mixer
    pattern: str | tuple[str, ...] | None = "AA"  # layer letters / names; None = use ratio
    num_layers: int | None = None  # with ratio: total layers
    ratio: int | None = None  # with num_layers: linear layers per attention layer
    linear_mixer: str = "gated_deltanet"  # the linear layer of a ratio stack
    attention_mixer: str = "attention"  # the attention layer of a ratio stack
    placement: str = "last"  # where attention sits in each ratio group: last | first | middle
    mlp_hidden: int | None = None  # SwiGLU width; None = 8/3·d_model; 0 = no MLP
    tie_embeddings: bool = True  # logits = x Eᵀ (else a separate head)
    mixer_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # per name
    norm_eps: float = 1e-6  # RMSNorm epsilon

    def layer_names(self) -> list[str]:
        """The mixer name of each layer."""
        if self.pattern is not None:
            if self.ratio is not None:
                raise ValueError("give either pattern or (num_layers, ratio), not both")
            return parse_pattern(self.pattern)
        if self.num_layers is None or self.ratio is None:
            raise ValueError("with pattern=None, set both num_layers and ratio")
        return ratio_pattern(
            self.num_layers,
            self.ratio,
            linear=self.linear_mixer,
            attention=self.attention_mixer,
            placement=self.placement,
        )


class Block(nnx.Module):
    """Pre-norm residual block: ``x + mixer(norm(x))`` then ``x + MLP(norm(x))``."""

    def __init__(self, mixer_name: str, config: LMConfig, *, rngs: nnx.Rngs):
        self.mixer_norm = RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = mixers.build(
            mixer_name,
            d_model=config.d_model,
            num_heads=config.num_heads,
            rngs=rngs,
            **config.mixer_options.get(mixer_name, {}),
        )
        has_mlp = config.mlp_hidden != 0
        self.mlp_norm = RMSNorm(config.d_model, eps=config.norm_eps) if has_mlp else None
        self.mlp = SwiGLU(config.d_model, config.mlp_hidden, rngs=rngs) if has_mlp else None

    def __call__(self, x, *, cache=None, segment_ids=None):
        y, cache = self.mixer(self.mixer_norm(x), cache=cache, segment_ids=segment_ids)
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, cache


class LM(nnx.Module):
    """Causal LM; ``__call__(tokens [B, T], *, cache, segment_ids) -> (logits [B, T, V], cache)``.

    ``cache`` is a list with one mixer cache per layer (``init_cache``).
    """

    def __init__(self, config: LMConfig, *, rngs: nnx.Rngs):
        if config.vocab_size <= 1:
            raise ValueError(f"vocab_size must be >= 2; got {config.vocab_size}")
        self.vocab_size = config.vocab_size
        self.layer_names = tuple(config.layer_names())
        self.embed = nnx.Embed(
            config.vocab_size,
            config.d_model,
            rngs=rngs,
            embedding_init=nnx.initializers.normal(stddev=config.d_model**-0.5),
        )
        self.blocks = nnx.List([Block(n, config, rngs=rngs) for n in self.layer_names])
        self.final_norm = RMSNorm(config.d_model, eps=config.norm_eps)
        self.head = (
            None
            if config.tie_embeddings
            else nnx.Linear(config.d_model, config.vocab_size, use_bias=False, rngs=rngs)
        )

    def init_cache(self, batch_size: int, max_len: int, dtype=jnp.float32) -> list:
        return [b.mixer.init_cache(batch_size, max_len, dtype) for b in self.blocks]

    def __call__(
        self,
        tokens: jax.Array,
        *,
        cache: Sequence | None = None,
        segment_ids: jax.Array | None = None,
    ) -> tuple[jax.Array, list | None]:
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [B, T]; got {tokens.shape}")
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(f"cache must hold {len(self.blocks)} layer caches; got {len(cache)}")
        x = self.embed(tokens)
        new_cache = [] if cache is not None else None
        for i, block in enumerate(self.blocks):
            x, c = block(x, cache=None if cache is None else cache[i], segment_ids=segment_ids)
            if new_cache is not None:
                new_cache.append(c)
        x = self.final_norm(x)
        if self.head is None:
            logits = self.embed.attend(x)
        else:
            logits = self.head(x)
        return logits.astype(jnp.float32), new_cache
