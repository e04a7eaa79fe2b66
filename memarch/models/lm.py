"""Language model over a hybrid stack of mixers.

``tokens [B, T] -> embed -> L × (x + mixer(norm(x)); x + MLP(norm(x))) -> norm -> logits``.
The mixer of each layer comes from a layer pattern (see :mod:`memarch.models.pattern`); any
registered mixer may appear in any layer. The head is tied to the embedding or separate.

Mixer options are typed: a layer's options are its mixer's options dataclass
(``mixers.config_class(name)``). ``LMConfig.mixers`` sets them per mixer name (every layer of
that mixer), ``LMConfig.layers`` per layer index (overriding the per-name options)::

    LMConfig(pattern="RRRS", mixers={"gla": {"chunk_size": 32}}, layers={3: {"window": 128}})

(command-line overrides ``model.mixers.gla.chunk_size=32``, ``model.layers.3.window=128``).
Both are checked when the config is made: unknown mixer names, unknown option names (closest
valid name suggested), wrongly typed values and layer indices out of range each raise a
``ValueError`` naming the dotted key (``model.mixers.moneta.p``) and what is accepted.
The sizes are checked when the config is made too (``d_model``, ``num_heads``, ``vocab_size``,
``mlp_hidden``, ``num_layers``, ``ratio``: ints of at least 1, 1, 2, 0, 1, 0; ``norm_eps > 0``),
and :meth:`LMConfig.layer_names` refuses a ``num_layers`` that disagrees with the pattern's
length (leave it None: it is derived from the pattern).

**Activation checkpointing** (``remat``) trades compute for memory in training: with
``"full"`` each block is wrapped in ``nnx.remat`` (``jax.checkpoint``), so the backward pass
keeps only each block's input and recomputes its activations; with ``"dots"`` the policy
``jax.checkpoint_policies.dots_with_no_batch_dims_saveable`` keeps the results of matmuls
without batch dimensions (the projections and the MLP) and recomputes the rest (norms, gates,
attention scores, recurrences). Outputs and gradients are unchanged (up to float rounding);
the parameters too, so a run may resume with another ``remat``. Decoding with a cache never
rematerialises (there is no backward pass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from memarch import mixers
from memarch.errors import ConfigError
from memarch.layers.mlp import SwiGLU
from memarch.layers.norms import RMSNorm
from memarch.models.pattern import parse_pattern, ratio_pattern
from memarch.registry import build_options, did_you_mean


def _mixer_options(mixers_field: Any) -> dict[str, Any]:
    """``{name: options dataclass}`` from ``{name: dataclass | mapping}``, checked."""
    if not isinstance(mixers_field, dict):
        raise ValueError(
            f"model.mixers must be a dict of mixer name -> options; got {mixers_field!r}"
        )
    out = {}
    for name, options in mixers_field.items():
        known = mixers.available()
        if name not in known:
            raise ValueError(
                f"model.mixers.{name}: unknown mixer {name!r}{did_you_mean(name, known)}; "
                f"available mixers: {known}"
            )
        cls = mixers.config_class(name)
        if type(options) is cls:
            out[name] = options
        elif dataclasses.is_dataclass(options):
            raise ValueError(
                f"model.mixers.{name} must be a {cls.__name__} (or a dict of its fields); "
                f"got a {type(options).__name__}"
            )
        else:
            out[name] = build_options(cls, options, where=f"model.mixers.{name}")
    return out


# model.remat -> the jax.checkpoint policy of each block (None: save nothing but its input)
REMAT_POLICIES: dict[str, Any] = {
    "none": None,  # (unused) no nnx.remat: every activation kept for the backward pass
    "full": None,  # nnx.remat without a policy: only the block's input is kept
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


# field -> (smallest accepted value, None accepted): the sizes of an LMConfig
_SIZES = {
    "vocab_size": (2, False),
    "d_model": (1, False),
    "num_heads": (1, False),
    "mlp_hidden": (0, True),
    "num_layers": (1, True),
    "ratio": (0, True),
}


def _check_sizes(cfg: LMConfig) -> None:
    """Every width, head count and layer count is an int of at least its minimum
    (:data:`_SIZES`) and ``norm_eps > 0``; ``ConfigError`` naming the field otherwise."""
    for name, (minimum, none_ok) in _SIZES.items():
        value = getattr(cfg, name)
        if value is None and none_ok:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            accepted = f"an int >= {minimum}" + (" or None" if none_ok else "")
            raise ConfigError(f"model.{name} must be {accepted}; got {value!r}")
    eps = cfg.norm_eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ConfigError(f"model.norm_eps must be a float > 0; got {eps!r}")


def _layer_index(key: Any, num_layers: int) -> int:
    """A layer index from an int or its decimal string (JSON object keys are strings)."""
    index = key
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        index = int(key)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < num_layers:
        raise ValueError(
            f"model.layers.{key}: layer index must be an int in [0, {num_layers}) "
            f"(the model has {num_layers} layers); got {key!r}"
        )
    return index


@dataclasses.dataclass(frozen=True)
class LMConfig:
    vocab_size: int = 256  # tokens in the vocabulary
    d_model: int = 64  # residual stream width
    num_heads: int = 4  # heads of every mixer
    pattern: str | tuple[str, ...] | None = "AA"  # layer letters / names; None = use ratio
    num_layers: int | None = None  # with ratio: total layers; with a pattern: None or its length
    ratio: int | None = None  # with num_layers: linear layers per attention layer
    linear_mixer: str = "gated_deltanet"  # the linear layer of a ratio stack
    attention_mixer: str = "attention"  # the attention layer of a ratio stack
    placement: str = "last"  # where attention sits in each ratio group: last | first | middle
    mlp_hidden: int | None = None  # SwiGLU width; None = 8/3·d_model; 0 = no MLP
    tie_embeddings: bool = True  # logits = x Eᵀ (else a separate head)
    # mixer name -> its options dataclass (or a dict of its fields): every layer of that mixer
    mixers: dict[str, Any] = dataclasses.field(default_factory=dict)
    # layer index -> {option: value} overriding the per-name options of that layer's mixer
    layers: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    norm_eps: float = 1e-6  # RMSNorm epsilon
    remat: str = "none"  # activation checkpointing per block: none | full | dots (module doc)

    def __post_init__(self):
        _check_sizes(self)
        if not isinstance(self.remat, str) or self.remat not in REMAT_POLICIES:
            raise ConfigError(
                f"model.remat must be one of {list(REMAT_POLICIES)}; got {self.remat!r}"
            )
        object.__setattr__(self, "mixers", _mixer_options(self.mixers))
        if not isinstance(self.layers, dict):
            raise ValueError(
                f"model.layers must be a dict of layer index -> options; got {self.layers!r}"
            )
        if not self.layers:
            return
        names = self.layer_names()
        layers = {}
        for key, overrides in self.layers.items():
            i = _layer_index(key, len(names))
            if i in layers:
                raise ValueError(f"model.layers.{key}: layer {i} is given twice")
            if not isinstance(overrides, dict):
                raise ValueError(
                    f"model.layers.{key} must be a dict of {names[i]} options; got {overrides!r}"
                )
            base = self._mixer_base(names[i])
            fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
            # checks the option names and value types, then the mixer's own validation
            resolved = build_options(type(base), {**fields, **overrides}, where=f"model.layers.{i}")
            layers[i] = {k: getattr(resolved, k) for k in overrides}
        object.__setattr__(self, "layers", dict(sorted(layers.items())))

    def _mixer_base(self, name: str) -> Any:
        """Mixer ``name``'s per-name options (its defaults where ``mixers`` has no entry)."""
        options = self.mixers.get(name)
        return mixers.config_class(name)() if options is None else options

    def layer_options(self, index: int) -> Any:
        """The options dataclass of layer ``index``: its mixer's defaults, then
        ``mixers[name]``, then ``layers[index]``."""
        names = self.layer_names()
        i = _layer_index(index, len(names))
        base = self._mixer_base(names[i])
        overrides = self.layers.get(i, {})
        return dataclasses.replace(base, **overrides) if overrides else base

    def layer_names(self) -> list[str]:
        """The mixer name of each layer."""
        if self.pattern is not None:
            if self.ratio is not None:
                raise ValueError("give either pattern or (num_layers, ratio), not both")
            names = parse_pattern(self.pattern)
            if self.num_layers is not None and self.num_layers != len(names):
                raise ConfigError(
                    f"model.num_layers ({self.num_layers}) disagrees with model.pattern "
                    f"{self.pattern!r} ({len(names)} layers); set model.num_layers=None (derived "
                    f"from the pattern) or {len(names)}"
                )
            return names
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

    def __init__(self, mixer_name: str, options: Any, config: LMConfig, *, rngs: nnx.Rngs):
        """``options``: the layer's mixer options dataclass (``config.layer_options(i)``)."""
        self.mixer_norm = RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = mixers.build(
            mixer_name,
            d_model=config.d_model,
            num_heads=config.num_heads,
            rngs=rngs,
            config=options,
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


def _call_block(block: Block, x: jax.Array, cache: Any, segment_ids: jax.Array | None):
    return block(x, cache=cache, segment_ids=segment_ids)


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
        self.blocks = nnx.List(
            [
                Block(n, config.layer_options(i), config, rngs=rngs)
                for i, n in enumerate(self.layer_names)
            ]
        )
        self.remat = config.remat
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
        run_block = _call_block
        if self.remat != "none" and cache is None:
            run_block = nnx.remat(_call_block, policy=REMAT_POLICIES[self.remat])
        for i, block in enumerate(self.blocks):
            x, c = run_block(block, x, None if cache is None else cache[i], segment_ids)
            if new_cache is not None:
                new_cache.append(c)
        x = self.final_norm(x)
        if self.head is None:
            logits = self.embed.attend(x)
        else:
            logits = self.head(x)
        return logits.astype(jnp.float32), new_cache
