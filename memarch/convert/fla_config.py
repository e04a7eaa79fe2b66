"""fla (flash-linear-attention 0.6.0) model configs <-> memarch :class:`LMConfig`.

An fla checkpoint's ``config.json`` names its family by ``model_type``; every family is a
pre-norm stack ``x + mixer(RMSNorm(x)); x + SwiGLU(RMSNorm(x))`` with a final RMSNorm and a
head (tied to the embedding with ``tie_word_embeddings``), the same block as memarch's
:class:`~memarch.models.lm.LM`. Hybrids list their softmax-attention layers in ``attn``
(one spec ``{"layers": [...], "num_heads": ..., "num_kv_heads", "qkv_bias", "window_size",
"rope_theta"}`` or a list of them); a spec with a ``window_size`` becomes memarch's ``swa``.

:func:`lm_config_from_fla` checks every field: a field fla 0.6.0 does not have is an error
naming it, and so is a value memarch cannot reproduce (e.g. GLA's ``feature_map``). Fields
that only steer fla's kernels or training (``attn_mode``, ``fuse_*``, ``use_cache``,
``initializer_range``, ...) have no effect on the logits and are accepted as they are.

:func:`fla_config_from_lm` is the reverse; it re-imports what it wrote and refuses (naming
the option) a memarch model whose options fla cannot express.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from memarch.errors import ConfigError, UserError
from memarch.models.lm import LMConfig

FLA_VERSION = "0.6.0"  # the fla release whose config fields and tensor names this follows


class ConvertError(UserError):
    """A checkpoint or model that cannot be converted; the message says which field, tensor
    or option and why."""


# fields every fla family has (fla 0.6.0 defaults)
COMMON: dict[str, Any] = {
    "hidden_size": 2048,
    "num_hidden_layers": 24,
    "hidden_ratio": 4,
    "intermediate_size": None,
    "hidden_act": "swish",
    "max_position_embeddings": 2048,
    "norm_eps": 1e-6,
    "use_cache": True,
    "pad_token_id": None,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "fuse_norm": True,
    "fuse_swiglu": True,
    "fuse_cross_entropy": True,
    "fuse_linear_cross_entropy": False,
    "use_l2warp": False,
    "vocab_size": 32000,
    "attnres_block_size": None,
}


@dataclasses.dataclass(frozen=True)
class Family:
    """One fla model family: ``model_type``, the class ``architectures`` names, memarch's
    mixer for its layers and its config fields with fla's defaults."""

    model_type: str
    architecture: str
    mixer: str
    defaults: Mapping[str, Any]


def _family(model_type, architecture, mixer, **own) -> Family:
    return Family(model_type, architecture, mixer, {**COMMON, **own})


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in [
        _family(
            "gla",
            "GLAForCausalLM",
            "gla",
            expand_k=0.5,
            expand_v=1.0,
            num_heads=4,
            num_kv_heads=None,
            feature_map=None,
            attn_mode="chunk",
            use_short_conv=False,
            conv_size=4,
            use_output_gate=True,
            clamp_min=None,
            elementwise_affine=True,
            use_gk=True,
            use_gv=False,
            attn=None,
        ),
        _family(
            "delta_net",
            "DeltaNetForCausalLM",
            "deltanet",
            attn_mode="chunk",
            expand_k=1.0,
            expand_v=1.0,
            use_gate=False,
            use_short_conv=True,
            allow_neg_eigval=False,
            conv_size=4,
            use_beta=True,
            use_output_norm=True,
            num_heads=16,
            qk_norm="l2",
            qk_activation="silu",
            attn=None,
        ),
        _family(
            "gated_deltanet",
            "GatedDeltaNetForCausalLM",
            "gated_deltanet",
            attn_mode="chunk",
            expand_v=2.0,
            use_gate=True,
            use_short_conv=True,
            allow_neg_eigval=False,
            conv_size=4,
            head_dim=256,
            num_heads=6,
            num_v_heads=None,
            attn=None,
            output_gate_activation="swish",
        ),
        _family(
            "hgrn2",
            "HGRN2ForCausalLM",
            "hgrn2",
            attn_mode="chunk",
            num_heads=None,
            expand_ratio=128,
            use_short_conv=False,
            conv_size=4,
            use_lower_bound=True,
            elementwise_affine=True,
            attn=None,
        ),
        _family(
            "linear_attn",
            "LinearAttentionForCausalLM",
            "linear_attention",
            attn_mode="fused_chunk",
            expand_k=1.0,
            expand_v=1.0,
            num_heads=4,
            num_kv_heads=None,
            feature_map="elementwise_product",
            tie_feature_map_qk=False,
            norm_q=False,
            norm_k=False,
            norm_feature_map=False,
            elementwise_affine=True,
            attn=None,
        ),
        _family(
            "mom",
            "MomForCausalLM",
            "mom",
            attn_mode="chunk",
            conv_size=4,
            num_heads=4,
            head_dim=256,
            expand_v=1.0,
            use_output_gate=True,
            use_short_conv=True,
            attn=None,
            num_memories=4,
            topk=2,
            capacity=1.0,
            use_layer_wise_balance=True,
            aux_loss_scale=0.01,
            shared_mem=True,
            single_kv_proj=False,
            mom_backend="gated_deltanet",
        ),
        _family(
            "transformer",
            "TransformerForCausalLM",
            "attention",
            num_heads=32,
            num_kv_heads=None,
            qkv_bias=False,
            qk_norm=False,
            window_size=None,
            rope_theta=10000.0,
            elementwise_affine=True,
        ),
    ]
}
for _f in FAMILIES.values():  # MoM's config has no fuse_linear_cross_entropy / use_l2warp
    if _f.model_type == "mom":
        _f.defaults.pop("fuse_linear_cross_entropy")  # type: ignore[attr-defined]
        _f.defaults.pop("use_l2warp")  # type: ignore[attr-defined]

# keys transformers adds to every config.json: bookkeeping, no effect on the model
HF_KEYS = frozenset(
    {
        "architectures",
        "model_type",
        "dtype",
        "torch_dtype",
        "transformers_version",
        "_name_or_path",
        "return_dict",
        "output_hidden_states",
        "output_attentions",
        "use_return_dict",
        "is_encoder_decoder",
        "chunk_size_feed_forward",
        "id2label",
        "label2id",
        "problem_type",
        "tokenizer_class",
        "task_specific_params",
        "keys_to_ignore_at_inference",
    }
)
# fields with no effect on the logits (kernel choice, fusion, training, generation defaults)
NO_EFFECT = frozenset(
    {
        "attn_mode",
        "use_cache",
        "initializer_range",
        "fuse_norm",
        "fuse_swiglu",
        "fuse_cross_entropy",
        "fuse_linear_cross_entropy",
        "use_l2warp",
        "max_position_embeddings",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "use_output_norm",  # passed to fla's DeltaNet layer, which ignores it
        "capacity",  # MoM: unused by fla 0.6.0's layer (no token is dropped)
        "use_layer_wise_balance",  # MoM: training loss only
    }
)
ATTN_SPEC_KEYS = ("layers", "num_heads", "num_kv_heads", "qkv_bias", "window_size", "rope_theta")
FEATURE_MAPS = {"elementwise_product": "hadamard", "elu": "elu1", "relu": "relu",
                "identity": "identity"}  # fmt: skip
# fla's q/k RMSNorm in its attention layer keeps the module default epsilon
FLA_QK_NORM_EPS = 1e-5
# fla's HGRN2 layer normalises its output with rms_norm_linear's default epsilon (its norm_eps
# is not passed on)
FLA_HGRN2_NORM_EPS = 1e-5
GATE_RANK, GATE_NORMALIZER = 16, 16.0  # fla's GLA layer: fixed low-rank dim and normaliser


def mlp_width(hidden: int, ratio: int | None, intermediate: int | None) -> int:
    """fla's GatedMLP width: ``intermediate_size``, else ``hidden·ratio·2/3`` rounded up to a
    multiple of 256 (ratio 4 when None)."""
    if intermediate is not None:
        return int(intermediate)
    width = int(hidden * (4 if ratio is None else ratio) * 2 / 3)
    return 256 * ((width + 255) // 256)


def _need(cond: bool, field: str, value: Any, accepted: str) -> None:
    if not cond:
        raise ConvertError(
            f"fla config field {field!r} = {value!r} is not supported by memarch; accepted: "
            f"{accepted}"
        )


def _per_head(total: float, heads: int, field: str) -> int:
    per = total / heads
    if abs(per - round(per)) > 1e-9 or per < 1:
        raise ConvertError(f"fla config: {field} = {total:g} is not divisible by {heads} heads")
    return int(round(per))


def _attn_specs(values: Mapping[str, Any], num_layers: int) -> dict[int, dict[str, Any]]:
    """``attn`` (None, a spec or a list of specs) -> {layer index: normalised spec}."""
    attn = values.get("attn")
    if attn is None:
        return {}
    specs = [attn] if isinstance(attn, Mapping) else attn
    if not isinstance(specs, list):
        raise ConvertError(f"fla config field 'attn' must be a dict or a list; got {attn!r}")
    out: dict[int, dict[str, Any]] = {}
    for spec in specs:
        if not isinstance(spec, Mapping):
            raise ConvertError(f"fla config field 'attn' holds a non-dict spec {spec!r}")
        unknown = sorted(set(spec) - set(ATTN_SPEC_KEYS))
        if unknown:
            raise ConvertError(
                f"fla config field 'attn' has unknown keys {unknown}; known: {list(ATTN_SPEC_KEYS)}"
            )
        for key in ("layers", "num_heads"):
            if key not in spec:
                raise ConvertError(f"fla config field 'attn' spec lacks {key!r}: {dict(spec)}")
        full = {
            "num_kv_heads": None, "qkv_bias": False, "window_size": None, "rope_theta": 10000.0,
            **spec,
        }  # fmt: skip
        for i in spec["layers"]:
            if not isinstance(i, int) or not 0 <= i < num_layers or i in out:
                raise ConvertError(
                    f"fla config field 'attn': layer {i!r} is out of [0, {num_layers}) or listed "
                    "twice"
                )
            out[i] = full
    return out


def _attention_options(spec: Mapping[str, Any], model_heads: int, d_model: int) -> tuple[str, dict]:
    """An fla attention spec -> (memarch mixer name, its options)."""
    heads = spec["num_heads"]
    _per_head(d_model, heads, "hidden_size (attention)")
    opts: dict[str, Any] = {"rope": True, "rope_base": float(spec.get("rope_theta", 10000.0))}
    if heads != model_heads:
        opts["num_heads"] = heads
    kv = spec.get("num_kv_heads")
    if kv is not None and kv != heads:
        opts["num_kv_heads"] = kv
    if spec.get("qkv_bias"):
        opts["qkv_bias"] = True
    if spec.get("qk_norm"):
        opts["qk_norm"] = True
        opts["norm_eps"] = FLA_QK_NORM_EPS
    window = spec.get("window_size")
    if window is not None:
        opts["window"] = int(window)
        return "swa", opts
    return "attention", opts


def _family_mixer(fam: Family, v: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """(the model's num_heads, the family mixer's options) from the config values ``v``."""
    d = v["hidden_size"]
    eps = float(v["norm_eps"])
    conv = int(v["conv_size"]) if v.get("use_short_conv") else 0
    t = fam.model_type
    if t == "gla":
        h = v["num_heads"]
        _need(v["feature_map"] is None, "feature_map", v["feature_map"], "None")
        _need(v["num_kv_heads"] in (None, h), "num_kv_heads", v["num_kv_heads"], f"None or {h}")
        _need(v["use_gk"] is True, "use_gk", v["use_gk"], "True")
        _need(v["use_gv"] is False, "use_gv", v["use_gv"], "False")
        dk = _per_head(d * v["expand_k"], h, "hidden_size * expand_k")
        dv = _per_head(d * v["expand_v"], h, "hidden_size * expand_v")
        opts = {
            "head_dim": dk, "expand_v": dv / dk, "short_conv": conv,
            "output_gate": bool(v["use_output_gate"]), "gate_clamp_min": v["clamp_min"],
            "gate_rank": GATE_RANK, "gate_normalizer": GATE_NORMALIZER, "norm_eps": eps,
        }  # fmt: skip
        return h, opts
    if t == "delta_net":
        h = v["num_heads"]
        _need(v["qk_norm"] == "l2", "qk_norm", v["qk_norm"], "'l2'")
        _need(v["qk_activation"] == "silu", "qk_activation", v["qk_activation"], "'silu'")
        _need(v["use_beta"] is True, "use_beta", v["use_beta"], "True")
        dk = _per_head(d * v["expand_k"], h, "hidden_size * expand_k")
        dv = _per_head(d * v["expand_v"], h, "hidden_size * expand_v")
        opts = {
            "head_dim": dk, "expand_v": dv / dk, "short_conv": conv,
            "output_gate": bool(v["use_gate"]), "allow_neg_eigval": bool(v["allow_neg_eigval"]),
            "norm_eps": eps, "silu_v": True,
        }  # fmt: skip
        return h, opts
    if t == "gated_deltanet":
        hq = v["num_heads"]
        hv = v["num_v_heads"] or hq
        _need(hv % hq == 0, "num_v_heads", v["num_v_heads"], f"a multiple of num_heads={hq}")
        act = v["output_gate_activation"]
        _need(act in ("swish", "silu"), "output_gate_activation", act, "'swish' or 'silu'")
        opts = {
            "head_dim": int(v["head_dim"]), "expand_v": float(v["expand_v"]), "short_conv": conv,
            "output_gate": bool(v["use_gate"]), "allow_neg_eigval": bool(v["allow_neg_eigval"]),
            "norm_eps": eps, "silu_v": True,
        }  # fmt: skip
        if hv != hq:
            opts["qk_heads"] = hq
        return hv, opts
    if t == "hgrn2":
        _need(
            v["elementwise_affine"] is True, "elementwise_affine", v["elementwise_affine"], "True"
        )
        ratio = v["expand_ratio"]
        if ratio is not None:
            h = d // ratio
        elif v["num_heads"] is not None:
            h, ratio = v["num_heads"], d // v["num_heads"]
        else:
            raise ConvertError("fla hgrn2 config: one of expand_ratio or num_heads must be set")
        dv = _per_head(d, h, "hidden_size")
        _need(h * ratio == d, "expand_ratio", ratio, f"a divisor of hidden_size={d}")
        opts = {
            "head_dim": int(ratio), "expand_v": dv / ratio, "short_conv": conv,
            "conv_layout": "qfi", "norm_over": "all", "norm_eps": FLA_HGRN2_NORM_EPS,
            "learned_lower_bound": bool(v["use_lower_bound"]), "output_gate": False,
        }  # fmt: skip
        return h, opts
    if t == "linear_attn":
        h = v["num_heads"]
        fm = v["feature_map"]
        _need(fm in FEATURE_MAPS, "feature_map", fm, str(sorted(FEATURE_MAPS)))
        _need(
            v["tie_feature_map_qk"] is False, "tie_feature_map_qk", v["tie_feature_map_qk"], "False"
        )
        for key in ("norm_q", "norm_k"):
            _need(v[key] is False, key, v[key], "False")
        _need(v["num_kv_heads"] in (None, h), "num_kv_heads", v["num_kv_heads"], f"None or {h}")
        _need(
            v["elementwise_affine"] is True, "elementwise_affine", v["elementwise_affine"], "True"
        )
        dk = _per_head(d * v["expand_k"], h, "hidden_size * expand_k")
        dv = _per_head(d * v["expand_v"], h, "hidden_size * expand_v")
        opts = {
            "head_dim": dk, "expand_v": dv / dk, "short_conv": 0,
            "feature_map": FEATURE_MAPS[fm], "output_gate": False, "norm_eps": eps,
            "normalize": bool(v["norm_feature_map"]),
        }  # fmt: skip
        return h, opts
    if t == "mom":
        h = v["num_heads"]
        _need(
            v["mom_backend"] == "gated_deltanet",
            "mom_backend",
            v["mom_backend"],
            "'gated_deltanet'",
        )
        _need(v["single_kv_proj"] is False, "single_kv_proj", v["single_kv_proj"], "False")
        _need(v["use_short_conv"] is True, "use_short_conv", v["use_short_conv"], "True")
        base = {
            "head_dim": int(v["head_dim"]), "expand_v": float(v["expand_v"]),
            "short_conv": int(v["conv_size"]), "output_gate": bool(v["use_output_gate"]),
            "norm_eps": eps, "silu_v": True,
        }  # fmt: skip
        opts = {
            "num_memories": int(v["num_memories"]), "top_k": int(v["topk"]),
            "shared_memory": bool(v["shared_mem"]), "base": "gated_deltanet",
            "base_options": base, "aux_loss_weight": float(v["aux_loss_scale"]),
        }  # fmt: skip
        return h, opts
    raise ConvertError(f"no mixer mapping for fla model_type {t!r}")  # pragma: no cover


def lm_config_from_fla(config: Mapping[str, Any]) -> LMConfig:
    """The memarch :class:`LMConfig` of an fla ``config.json`` (a dict). ``ConvertError``
    names an unknown field, an unsupported value or an unknown ``model_type``."""
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ConvertError(
            f"fla config field 'model_type' = {model_type!r} is not supported; supported "
            f"families: {sorted(FAMILIES)}"
        )
    fam = FAMILIES[model_type]
    unknown = sorted(set(config) - set(fam.defaults) - HF_KEYS)
    if unknown:
        raise ConvertError(
            f"fla {model_type} config has unknown fields {unknown} (not in fla {FLA_VERSION}'s "
            f"{fam.architecture} config)"
        )
    v = {**fam.defaults, **config}
    _need(v["hidden_act"] == "swish", "hidden_act", v["hidden_act"], "'swish'")
    _need(v["attnres_block_size"] is None, "attnres_block_size", v["attnres_block_size"], "None")
    if "elementwise_affine" in v:
        _need(
            v["elementwise_affine"] is True, "elementwise_affine", v["elementwise_affine"], "True"
        )
    d, n = int(v["hidden_size"]), int(v["num_hidden_layers"])
    if fam.model_type == "transformer":
        spec = {k: v[k] for k in ("num_heads", "num_kv_heads", "qkv_bias", "window_size",
                                  "rope_theta", "qk_norm")}  # fmt: skip
        heads = int(v["num_heads"])
        name, opts = _attention_options(spec, heads, d)
        names, mixer_opts, layers = [name] * n, {name: opts}, {}
    else:
        heads, opts = _family_mixer(fam, v)
        specs = _attn_specs(v, n)
        names = [fam.mixer] * n
        mixer_opts = {fam.mixer: opts}
        layers = {}
        for i, spec in specs.items():
            name, a_opts = _attention_options(spec, heads, d)
            names[i] = name
            layers[i] = a_opts
    try:
        return LMConfig(
            vocab_size=int(v["vocab_size"]),
            d_model=d,
            num_heads=heads,
            pattern=tuple(names),
            mlp_hidden=mlp_width(d, v["hidden_ratio"], v["intermediate_size"]),
            tie_embeddings=bool(v["tie_word_embeddings"]),
            mixers=mixer_opts,
            layers=layers,
            norm_eps=float(v["norm_eps"]),
        )
    except (ValueError, ConfigError) as e:
        raise ConvertError(f"fla {model_type} config gives an invalid memarch model: {e}") from None


# --- export ---------------------------------------------------------------------------------

# options that only choose a kernel or an initialisation: no effect on the function computed
COMPUTE_ONLY = frozenset(
    {
        "impl",
        "chunk_size",
        "dt_min",
        "dt_max",
        "gate_bias_init",
        "aux_loss_weight",
        "capacity_factor",
    }  # fmt: skip
)


def _comparable(options: Any, d_model: int, heads: int) -> dict[str, Any]:
    """What an options dataclass computes, as a dict: without :data:`COMPUTE_ONLY` fields and
    options that have no effect in context (the conv's options without a conv, ``silu_v`` with
    one, the initial lower bound of a learned one, the q/k-norm epsilon without q/k norm);
    ``head_dim`` resolved; MoM's base options resolved the same way."""
    out = {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if f.name not in COMPUTE_ONLY
    }
    if "base_options" in out:
        out.pop("base_options")
        base = _comparable(options.base_config(), d_model, heads)
        out.update({f"base.{k}": v for k, v in base.items()})
    if out.get("head_dim", 0) is None:
        out["head_dim"] = d_model // (out.get("num_heads") or heads)
    if out.get("short_conv") == 0:
        for key in ("conv_bias", "conv_layout"):
            out.pop(key, None)
    elif "silu_v" in out:
        out.pop("silu_v")
    if out.get("learned_lower_bound"):
        out.pop("forget_lower_bound", None)
    if "qk_norm" in out and not out["qk_norm"]:
        out.pop("norm_eps", None)
    if "num_kv_heads" in out:  # attention: heads given as the model's or explicitly
        out["num_heads"] = out["num_heads"] or heads
        out["num_kv_heads"] = out["num_kv_heads"] or out["num_heads"]
    return out


def _family_of(names: list[str]) -> Family:
    linear = sorted({n for n in names if n not in ("attention", "swa")})
    if not linear:
        return FAMILIES["transformer"]
    by_mixer = {f.mixer: f for f in FAMILIES.values() if f.model_type != "transformer"}
    for name in linear:
        if name not in by_mixer:
            raise ConvertError(
                f"mixer {name!r} (layer {names.index(name)}) has no fla counterpart; fla "
                "families (memarch mixer): "
                + ", ".join(f"{f.model_type} ({f.mixer})" for f in FAMILIES.values())
                + ", with attention / swa layers"
            )
    if len(linear) > 1:
        raise ConvertError(
            f"the model mixes {linear}; an fla model has one linear mixer family (plus attention "
            "layers)"
        )
    return by_mixer[linear[0]]


def _attn_spec_of(options: Any, model_heads: int) -> dict[str, Any]:
    heads = options.num_heads or model_heads
    spec = {
        "num_heads": heads,
        "num_kv_heads": options.num_kv_heads or heads,
        "qkv_bias": bool(options.qkv_bias),
        "window_size": options.window,
        "rope_theta": float(options.rope_base),
    }
    return spec


def _family_fields(fam: Family, cfg: LMConfig, opts: Any) -> dict[str, Any]:
    """fla fields of the family mixer from its memarch options ``opts``."""
    d, h = cfg.d_model, cfg.num_heads
    t = fam.model_type
    if t == "mom":
        base = opts.base_config()
        return {
            "num_heads": h, "head_dim": base.head_dim or d // h, "expand_v": base.expand_v,
            "use_output_gate": base.output_gate, "use_short_conv": base.short_conv > 0,
            "conv_size": base.short_conv or 4, "num_memories": opts.num_memories,
            "topk": opts.top_k, "shared_mem": opts.shared_memory,
            "aux_loss_scale": opts.aux_loss_weight,
        }  # fmt: skip
    dk = opts.head_dim or d // h
    dv = max(1, int(round(dk * opts.expand_v)))
    conv = {"use_short_conv": opts.short_conv > 0, "conv_size": opts.short_conv or 4}
    if t == "gla":
        return {
            "num_heads": h, "expand_k": dk * h / d, "expand_v": dv * h / d, **conv,
            "use_output_gate": opts.output_gate, "clamp_min": opts.gate_clamp_min,
        }  # fmt: skip
    if t == "delta_net":
        return {
            "num_heads": h, "expand_k": dk * h / d, "expand_v": dv * h / d, **conv,
            "use_gate": opts.output_gate, "allow_neg_eigval": opts.allow_neg_eigval,
        }  # fmt: skip
    if t == "gated_deltanet":
        hq = opts.qk_heads or h
        return {
            "num_heads": hq, "num_v_heads": None if hq == h else h, "head_dim": dk,
            "expand_v": opts.expand_v, **conv, "use_gate": opts.output_gate,
            "allow_neg_eigval": opts.allow_neg_eigval,
        }  # fmt: skip
    if t == "hgrn2":
        return {
            "num_heads": h, "expand_ratio": dk, **conv,
            "use_lower_bound": opts.learned_lower_bound,
        }  # fmt: skip
    if t == "linear_attn":
        inverse = {m: f for f, m in FEATURE_MAPS.items()}
        return {
            "num_heads": h, "expand_k": dk * h / d, "expand_v": dv * h / d,
            "feature_map": inverse.get(opts.feature_map, opts.feature_map),
            "norm_feature_map": opts.normalize,
        }  # fmt: skip
    raise ConvertError(f"no export for fla model_type {t!r}")  # pragma: no cover


def fla_config_from_lm(cfg: LMConfig, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fla ``config.json`` (a dict) of a memarch :class:`LMConfig`.

    ``base``: the fla config the model was imported from (kept in the run directory), whose
    fields without a memarch counterpart (``bos_token_id``, ``max_position_embeddings``, ...)
    are kept; else fla's defaults. ``ConvertError`` when a mixer has no fla counterpart or an
    option cannot be expressed in fla (checked by importing the result back).
    """
    names = cfg.layer_names()
    fam = _family_of(names)
    out: dict[str, Any] = dict(fam.defaults)
    if base is not None and base.get("model_type") == fam.model_type:
        out.update({k: v for k, v in base.items() if k in fam.defaults})
    if cfg.mlp_hidden == 0:
        raise ConvertError("model.mlp_hidden = 0 (no MLP) has no fla counterpart")
    out.update(
        hidden_size=cfg.d_model,
        num_hidden_layers=len(names),
        vocab_size=cfg.vocab_size,
        tie_word_embeddings=cfg.tie_embeddings,
        norm_eps=cfg.norm_eps,
        intermediate_size=mlp_width(cfg.d_model, None, cfg.mlp_hidden),
    )
    attn_layers = [i for i, n in enumerate(names) if n in ("attention", "swa")]
    if fam.model_type == "transformer":
        spec = _attn_spec_of(cfg.layer_options(0), cfg.num_heads)
        out.update({k: spec[k] for k in ("num_heads", "num_kv_heads", "qkv_bias", "window_size",
                                          "rope_theta")})  # fmt: skip
        out["num_kv_heads"] = (
            None if spec["num_kv_heads"] == spec["num_heads"] else spec["num_kv_heads"]
        )
        out["qk_norm"] = bool(cfg.layer_options(0).qk_norm)
    else:
        first = next(i for i, n in enumerate(names) if n not in ("attention", "swa"))
        out.update(_family_fields(fam, cfg, cfg.layer_options(first)))
        specs: list[dict[str, Any]] = []
        for i in attn_layers:
            spec = _attn_spec_of(cfg.layer_options(i), cfg.num_heads)
            same = next((s for s in specs if all(s[k] == spec[k] for k in spec)), None)
            if same is None:
                specs.append({"layers": [i], **spec})
            else:
                same["layers"].append(i)
        out["attn"] = None if not specs else specs[0] if len(specs) == 1 else specs
    out["model_type"] = fam.model_type
    out["architectures"] = [fam.architecture]
    _check_round_trip(cfg, out)
    return out


def _windowed(cfg: LMConfig) -> list[str]:
    """Layer names, with an ``attention`` layer that has a window called ``swa`` (the same
    computation)."""
    names = cfg.layer_names()
    return [
        "swa" if n == "attention" and cfg.layer_options(i).window is not None else n
        for i, n in enumerate(names)
    ]


def _check_round_trip(cfg: LMConfig, fla: Mapping[str, Any]) -> None:
    """Import ``fla`` back and compare every layer's options with ``cfg``'s (ignoring
    :data:`COMPUTE_ONLY`); ``ConvertError`` naming the first option fla cannot express."""
    back = lm_config_from_fla(fla)
    names, back_names = _windowed(cfg), _windowed(back)
    if names != back_names:
        raise ConvertError(f"layer pattern {names} cannot be expressed in fla (got {back_names})")
    for key in ("vocab_size", "d_model", "tie_embeddings", "norm_eps", "mlp_hidden"):
        a, b = getattr(cfg, key), getattr(back, key)
        if key == "mlp_hidden" and a is None:
            continue
        if a != b:
            raise ConvertError(f"model.{key} = {a!r} cannot be expressed in fla (gives {b!r})")
    for i, name in enumerate(names):
        mine = _comparable(cfg.layer_options(i), cfg.d_model, cfg.num_heads)
        theirs = _comparable(back.layer_options(i), back.d_model, back.num_heads)
        if name not in ("attention", "swa") and cfg.num_heads != back.num_heads:
            raise ConvertError(
                f"model.num_heads = {cfg.num_heads} cannot be expressed in fla's {name} "
                f"(gives {back.num_heads})"
            )
        for key in sorted(set(mine) | set(theirs)):
            a, b = mine.get(key), theirs.get(key)
            if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-9):
                continue
            if a != b:
                raise ConvertError(
                    f"layer {i} ({name}): option {key} = {a!r} has no fla counterpart (fla's "
                    f"{fla['model_type']} gives {b!r})"
                )
