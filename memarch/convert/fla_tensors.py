"""fla tensor names and layouts <-> memarch parameter paths.

A :class:`Rule` maps some fla tensors (names as fla's ``save_pretrained`` writes them) to some
memarch parameters (``/``-joined paths of ``nnx.state(model, nnx.Param)``) and back. The
layouts:

- ``torch.nn.Linear.weight`` is ``[out, in]``; a flax ``nnx.Linear`` kernel is ``[in, out]``:
  transposed. Biases and norm scales are copied.
- fla's short convs are one ``nn.Conv1d(C, C, W, groups=C, padding=W − 1)`` per projection
  (``q_conv1d``, ``k_conv1d``, ``v_conv1d``; HGRN2: ``q, f, i``), weight ``[C, 1, W]`` whose
  last tap multiplies the current token; memarch runs one conv over the concatenated channels
  with ``weight [W, ΣC]`` whose row 0 multiplies the current token: flipped, transposed and
  concatenated (biases concatenated).
- MoM's per-memory projections ``k_proj.{m}`` (and ``shared_k`` for the shared memory) stack
  along memarch's leading memory axis; its router ``gate.weight [M, D]`` is ``router [D, M]``.
- HGRN2's model-level ``model.lower_bounds [L, D]`` becomes each layer's lower bound
  ``lb_l = cumsum(softmax(lower_bounds, 0))_l − softmax(·)_0`` (computed in float64); the way
  back takes ``p_0 = 1 − lb_{L−1}``, ``p_l = lb_l − lb_{l−1}`` and ``log p`` (which fla's
  softmax maps to the same ``p``), so it needs every layer to be an HGRN2 layer with
  non-decreasing bounds below 1. In float32 that round trip may move a bound by an ulp, so
  import settles the bounds on a fixed point of it (a few ulps from the exact values), and
  import → export → import is bit-identical.

:func:`rules` lists the rules of a model; :func:`fla_to_memarch` / :func:`memarch_to_fla`
apply them and check that every tensor on both sides is used exactly once with its shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from memarch.convert.fla_config import ConvertError
from memarch.models.lm import LMConfig

Arrays = list[np.ndarray]


@dataclasses.dataclass(frozen=True)
class Rule:
    """``targets`` (memarch paths) = ``fwd(sources)`` (fla names); ``sources = inv(targets)``."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    fwd: Callable[[Arrays], Arrays]
    inv: Callable[[Arrays], Arrays]


def _copy(src: str, dst: str) -> Rule:
    return Rule((src,), (dst,), lambda a: [a[0]], lambda a: [a[0]])


def _linear(src: str, dst: str) -> Rule:
    """torch ``weight [out, in]`` <-> flax ``kernel [in, out]``."""
    return Rule((src,), (dst,), lambda a: [a[0].T], lambda a: [a[0].T])


def _conv(srcs: Sequence[str], dst: str, widths: Sequence[int]) -> Rule:
    """fla per-projection conv weights ``[C_i, 1, W]`` <-> memarch ``[W, ΣC_i]`` (row j = tap
    j steps back)."""

    def fwd(a):
        return [np.concatenate([w[:, 0, ::-1].T for w in a], axis=1)]

    def inv(a):
        parts = np.split(a[0], np.cumsum(widths)[:-1], axis=1)
        return [np.ascontiguousarray(p.T[:, None, ::-1]) for p in parts]

    return Rule(tuple(srcs), (dst,), fwd, inv)


def _concat(srcs: Sequence[str], dst: str, widths: Sequence[int]) -> Rule:
    def inv(a):
        return list(np.split(a[0], np.cumsum(widths)[:-1]))

    return Rule(tuple(srcs), (dst,), lambda a: [np.concatenate(a)], inv)


def _stack_linear(srcs: Sequence[str], dst: str) -> Rule:
    """Per-memory ``weight [out, in]`` list <-> stacked kernel ``[S, in, out]``."""
    return Rule(
        tuple(srcs),
        (dst,),
        lambda a: [np.stack([w.T for w in a])],
        lambda a: [np.ascontiguousarray(k.T) for k in a[0]],
    )


_FIXED_POINT_STEPS = 8  # bound of the fixed-point iteration of HGRN2's lower bounds


def _lower_bounds(layers: Sequence[int], num_layers: int) -> Rule:
    """``model.lower_bounds [L, D]`` <-> every HGRN2 layer's ``lower_bound [D]``."""
    dsts = tuple(f"blocks/{i}/mixer/lower_bound" for i in layers)

    every_layer = list(layers) == list(range(num_layers))

    def bounds(logits: np.ndarray) -> np.ndarray:
        raw = logits.astype(np.float64)
        e = np.exp(raw - raw.max(0, keepdims=True))
        p = e / e.sum(0, keepdims=True)
        return (np.cumsum(p, 0) - p[0]).astype(np.float32)

    def fwd(a):
        lb = bounds(a[0])
        # The float32 round trip bounds -> logits -> bounds may move a bound by an ulp. Move to
        # a fixed point of that map first (a few ulps from the exact bounds; it settles in one
        # or two steps), so that import -> export -> import gives bit-identical parameters.
        for _ in range(_FIXED_POINT_STEPS if every_layer else 0):
            try:
                again = bounds(logits_of(lb))
            except ConvertError:  # bounds fla cannot hold (not increasing): exported never
                break
            if np.array_equal(again, lb):
                break
            lb = again
        return [lb[i] for i in layers]

    def logits_of(lb: np.ndarray) -> np.ndarray:
        lb = lb.astype(np.float64)
        p = np.concatenate([1.0 - lb[-1:], np.diff(lb, axis=0)])
        if np.any(lb[0] != 0) or np.any(p <= 0):
            raise ConvertError(
                "HGRN2 lower bounds cannot be written as fla's model.lower_bounds: they must be "
                "0 in layer 0, strictly increasing over layers and below 1"
            )
        return np.log(p).astype(np.float32)

    def inv(a):
        if not every_layer:
            raise ConvertError(
                "HGRN2 lower bounds export needs every layer to be an HGRN2 layer (fla derives "
                "them from one model-level softmax over all layers)"
            )
        return [logits_of(np.stack(a))]

    return Rule(("model.lower_bounds",), dsts, fwd, inv)


def _norm(src: str, gated: bool, m: str) -> Rule:
    return _copy(src, f"{m}o_norm/norm/scale" if gated else f"{m}o_norm/scale")


def _conv_rules(
    p: str, m: str, names: Sequence[str], widths: Sequence[int], bias: bool
) -> list[Rule]:
    rules = [_conv([f"{p}{n}_conv1d.weight" for n in names], f"{m}conv/weight", widths)]
    if bias:
        rules.append(_concat([f"{p}{n}_conv1d.bias" for n in names], f"{m}conv/bias", widths))
    return rules


def _recurrent_rules(
    name: str, opts, cfg: LMConfig, p: str, m: str, fuse_norm: bool = True
) -> list[Rule]:
    """Rules of one gla / deltanet / gated_deltanet / hgrn2 / linear_attention layer (fla
    prefix ``p``, memarch prefix ``m``)."""
    h, d = cfg.num_heads, cfg.d_model
    dk = opts.head_dim or d // h
    dv = max(1, int(round(dk * opts.expand_v)))
    hq = getattr(opts, "qk_heads", None) or h
    out = [
        _linear(f"{p}q_proj.weight", f"{m}q_proj/kernel"),
        _linear(f"{p}o_proj.weight", f"{m}o_proj/kernel"),
    ]
    conv = opts.short_conv > 0
    if name == "hgrn2":
        out += [
            _linear(f"{p}f_proj.weight", f"{m}f_proj/kernel"),
            _linear(f"{p}i_proj.weight", f"{m}v_proj/kernel"),
            _copy(f"{p}g_norm.weight", f"{m}o_norm/scale"),
        ]
        if conv:
            out += _conv_rules(p, m, "qfi", [h * dk, h * dk, h * dv], opts.conv_bias)
        return out
    out += [
        _linear(f"{p}k_proj.weight", f"{m}k_proj/kernel"),
        _linear(f"{p}v_proj.weight", f"{m}v_proj/kernel"),
    ]
    if conv:
        out += _conv_rules(p, m, "qkv", [hq * dk, hq * dk, h * dv], opts.conv_bias)
    if opts.output_gate:
        out.append(_linear(f"{p}g_proj.weight", f"{m}g_proj/kernel"))
    if name == "gla":
        fused = opts.output_gate and fuse_norm  # fla's fused gated norm is its own module
        out += [
            _linear(f"{p}gk_proj.0.weight", f"{m}gate_down/kernel"),
            _linear(f"{p}gk_proj.1.weight", f"{m}gate_up/kernel"),
            _copy(f"{p}gk_proj.1.bias", f"{m}gate_up/bias"),
            _norm(
                f"{p}g_norm_swish_gate.weight" if fused else f"{p}g_norm.weight",
                opts.output_gate,
                m,
            ),
        ]
    elif name in ("deltanet", "gated_deltanet"):
        out += [
            _linear(f"{p}b_proj.weight", f"{m}beta_proj/kernel"),
            _norm(f"{p}o_norm.weight", opts.output_gate, m),
        ]
        if name == "gated_deltanet":
            out += [
                _linear(f"{p}a_proj.weight", f"{m}a_proj/kernel"),
                _copy(f"{p}A_log", f"{m}A_log"),
                _copy(f"{p}dt_bias", f"{m}dt_bias"),
            ]
    elif name == "linear_attention":
        out.append(_copy(f"{p}norm.weight", f"{m}o_norm/scale"))
        if opts.feature_map == "hadamard":
            for qk in "qk":
                for layer in ("layer1", "layer2"):
                    src, dst = f"{p}feature_map_{qk}.{layer}", f"{m}feature_map_{qk}/{layer}"
                    out += [
                        _linear(f"{src}.weight", f"{dst}/kernel"),
                        _copy(f"{src}.bias", f"{dst}/bias"),
                    ]
    return out


# MoM's per-memory tensors: (fla routed name, fla shared name, memarch memory parameter)
MOM_MEMORY_TENSORS = (
    ("k_proj", "shared_k", "k_proj"),
    ("v_proj", "shared_v", "v_proj"),
    ("b_proj", "shared_b", "beta_proj"),
    ("a_proj", "shared_a", "a_proj"),
)


def _mom_rules(opts, cfg: LMConfig, p: str, m: str) -> list[Rule]:
    base = opts.base_config()
    h, d = cfg.num_heads, cfg.d_model
    dk = base.head_dim or d // h
    dv = max(1, int(round(dk * base.expand_v)))
    n = opts.num_memories
    b, mem = f"{m}base/", f"{m}memories/"
    out = [
        _linear(f"{p}q_proj.weight", f"{b}q_proj/kernel"),
        _linear(f"{p}o_proj.weight", f"{b}o_proj/kernel"),
        _linear(f"{p}gate.weight", f"{m}router"),
        _copy(f"{p}A_log", f"{b}A_log"),
        _copy(f"{p}dt_bias", f"{b}dt_bias"),
        _norm(f"{p}o_norm.weight", base.output_gate, b),
    ]
    out += _conv_rules(p, b, "qkv", [h * dk, h * dk, h * dv], base.conv_bias)
    if base.output_gate:
        out.append(_linear(f"{p}g_proj.weight", f"{b}g_proj/kernel"))
    for fla_name, shared, ours in MOM_MEMORY_TENSORS:
        srcs = [f"{p}{fla_name}.{e}.weight" for e in range(n)]
        if opts.shared_memory:
            srcs.append(f"{p}{shared}.weight")
        out.append(_stack_linear(srcs, f"{mem}{ours}/kernel"))
    return out


def _attention_rules(opts, p: str, m: str) -> list[Rule]:
    out = []
    for x in "qkv":
        out.append(_linear(f"{p}{x}_proj.weight", f"{m}{x}_proj/kernel"))
        if opts.qkv_bias:
            out.append(_copy(f"{p}{x}_proj.bias", f"{m}{x}_proj/bias"))
    out.append(_linear(f"{p}o_proj.weight", f"{m}o_proj/kernel"))
    if opts.qk_norm:
        out += [
            _copy(f"{p}q_norm.weight", f"{m}q_norm/scale"),
            _copy(f"{p}k_norm.weight", f"{m}k_norm/scale"),
        ]
    return out


def rules(cfg: LMConfig, fuse_norm: bool = True) -> list[Rule]:
    """Every fla tensor <-> memarch parameter rule of a model with config ``cfg``
    (``fuse_norm``: fla's config field, which names GLA's gated output norm
    ``g_norm_swish_gate`` when true and ``g_norm`` when false)."""
    names = cfg.layer_names()
    out = [
        _copy("model.embeddings.weight", "embed/embedding"),
        _copy("model.norm.weight", "final_norm/scale"),
    ]
    if not cfg.tie_embeddings:
        out.append(_linear("lm_head.weight", "head/kernel"))
    hgrn2_lb = []
    for i, name in enumerate(names):
        p, m = f"model.layers.{i}.", f"blocks/{i}/"
        out += [
            _copy(f"{p}attn_norm.weight", f"{m}mixer_norm/scale"),
            _copy(f"{p}mlp_norm.weight", f"{m}mlp_norm/scale"),
            _linear(f"{p}mlp.gate_proj.weight", f"{m}mlp/gate/kernel"),
            _linear(f"{p}mlp.up_proj.weight", f"{m}mlp/up/kernel"),
            _linear(f"{p}mlp.down_proj.weight", f"{m}mlp/down/kernel"),
        ]
        opts = cfg.layer_options(i)
        pa, ma = f"{p}attn.", f"{m}mixer/"
        if name in ("attention", "swa"):
            out += _attention_rules(opts, pa, ma)
        elif name == "mom":
            out += _mom_rules(opts, cfg, pa, ma)
        else:
            out += _recurrent_rules(name, opts, cfg, pa, ma, fuse_norm)
            if name == "hgrn2" and opts.learned_lower_bound:
                hgrn2_lb.append(i)
    if hgrn2_lb:
        out.append(_lower_bounds(hgrn2_lb, len(names)))
    return out


def _check_unique(rules_: Sequence[Rule]) -> None:
    for side in ("sources", "targets"):
        seen: set[str] = set()
        for r in rules_:
            for name in getattr(r, side):
                if name in seen:  # a bug in the rules, not in the checkpoint
                    raise AssertionError(f"{name} is used by two conversion rules")
                seen.add(name)


def _apply(
    rules_: Sequence[Rule],
    given: Mapping[str, np.ndarray],
    wanted: Mapping[str, tuple[int, ...]],
    *,
    forward: bool,
    given_what: str,
    wanted_what: str,
) -> dict[str, np.ndarray]:
    """Runs every rule on ``given`` (name -> array); the results must be exactly ``wanted``
    (name -> shape). ``ConvertError`` names a missing / unused tensor or a shape mismatch."""
    _check_unique(rules_)
    inputs = {n for r in rules_ for n in (r.sources if forward else r.targets)}
    missing = sorted(inputs - set(given))
    if missing:
        raise ConvertError(
            f"{given_what} lacks tensors {missing[:8]}" + (" ..." if len(missing) > 8 else "")
        )
    extra = sorted(set(given) - inputs)
    if extra:
        raise ConvertError(
            f"{given_what} has tensors the model does not use: {extra[:8]}"
            + (" ..." if len(extra) > 8 else "")
        )
    out: dict[str, np.ndarray] = {}
    for r in rules_:
        ins, outs = (r.sources, r.targets) if forward else (r.targets, r.sources)
        try:
            arrays = (r.fwd if forward else r.inv)([np.asarray(given[n]) for n in ins])
        except ConvertError:
            raise
        except (ValueError, IndexError) as e:
            shapes = {n: tuple(np.shape(given[n])) for n in ins}
            raise ConvertError(
                f"{given_what}: tensors {shapes} have the wrong shapes ({e})"
            ) from None
        for name, a in zip(outs, arrays, strict=True):
            out[name] = a
    unproduced = sorted(set(wanted) - set(out))
    if unproduced:  # a bug in the rules: a parameter no rule fills
        raise AssertionError(f"no conversion rule gives {wanted_what} {unproduced}")
    unwanted = sorted(set(out) - set(wanted))
    if unwanted:
        raise AssertionError(f"conversion rules give unknown {wanted_what} {unwanted}")
    for name, shape in wanted.items():
        if tuple(out[name].shape) != tuple(shape):
            src = [r for r in rules_ if name in (r.targets if forward else r.sources)][0]
            ins = src.sources if forward else src.targets
            got = [tuple(np.shape(given[n])) for n in ins]
            raise ConvertError(
                f"{given_what}: {', '.join(ins)} {got} gives {wanted_what} {name} of shape "
                f"{tuple(out[name].shape)}; the model needs {tuple(shape)}"
            )
    return out


def fla_to_memarch(
    cfg: LMConfig,
    tensors: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]],
    fuse_norm: bool = True,
) -> dict[str, np.ndarray]:
    """fla tensors -> memarch parameters (path -> array) of the shapes ``shapes``."""
    return _apply(
        rules(cfg, fuse_norm),
        tensors,
        shapes,
        forward=True,
        given_what="the fla checkpoint",
        wanted_what="memarch parameter",
    )


def memarch_to_fla(
    cfg: LMConfig, params: Mapping[str, np.ndarray], fuse_norm: bool = True
) -> dict[str, np.ndarray]:
    """memarch parameters (path -> array) -> fla tensors (name -> array)."""
    return _apply_loose(rules(cfg, fuse_norm), params)


def _apply_loose(rules_: Sequence[Rule], params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reverse rules without a shape table (fla's shapes follow from the parameters)."""
    _check_unique(rules_)
    inputs = {n for r in rules_ for n in r.targets}
    missing, extra = sorted(inputs - set(params)), sorted(set(params) - inputs)
    if missing or extra:
        raise ConvertError(f"the memarch model's parameters do not match its config: missing "
                           f"{missing[:8]}, unexpected {extra[:8]}")  # fmt: skip
    out: dict[str, np.ndarray] = {}
    for r in rules_:
        for name, a in zip(
            r.sources, r.inv([np.asarray(params[n]) for n in r.targets]), strict=True
        ):
            out[name] = np.ascontiguousarray(a)
    return out
