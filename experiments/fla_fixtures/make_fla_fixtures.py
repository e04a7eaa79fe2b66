"""Generate reference fixtures with flash-linear-attention's (fla) own model classes.

Never run by CI. It writes ``tests/convert/fixtures/fla/<name>/`` with

* ``config.json`` (+ ``generation_config.json``) and ``model.safetensors`` exactly as
  ``save_pretrained`` writes them (float32),
* ``reference.npz``: ``input_ids`` [B=2, T=32] int32, ``logits`` [B, T, V] float32 (fla's
  forward), ``greedy_prompt`` [1, P=8] int32 and ``greedy_tokens`` [1, 16] int32 (fla's greedy
  continuation),

plus ``tests/convert/fixtures/fla/README.md`` listing every fixture.

Set-up, in a venv of its own (the torch CPU wheel used is for Python 3.11; fla 0.6.0 needs
``triton`` importable, but no Triton kernel is ever launched: see the substitutions below)::

    python3.11 -m venv /work/flavenv
    W=/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    /work/flavenv/bin/pip install $W \
        flash-linear-attention==0.6.0 fla-core==0.6.0 triton==3.9.0 transformers==5.25.0 \
        safetensors==0.8.0 numpy==2.4.6 einops==0.8.2
    /work/flavenv/bin/python experiments/fla_fixtures/make_fla_fixtures.py [--only NAME ...]

(the same pins form the ``fla-fixtures`` extra of pyproject.toml).

CPU substitutions. fla's layers call Triton kernels, which cannot run without a GPU. Before any
model is built, :func:`install_cpu_substitutes` rebinds the names the layers look up (fla name, in
the module where the layer looks it up -> torch substitute):

* ``chunk_gla``, ``fused_recurrent_gla``, ``fused_chunk_gla`` (``fla.layers.gla``,
  ``fla.layers.hgrn2``) -> ``fla.ops.gla.naive.naive_recurrent_gla`` (scale K^-1/2, the kernels'
  default).
* ``chunk_delta_rule``, ``fused_recurrent_delta_rule`` (``fla.layers.delta_net``) -> q, k
  L2-normalised as the kernels' ``use_qk_l2norm_in_kernel`` does (x / sqrt(sum x^2 + 1e-6)), then
  ``fla.ops.delta_rule.naive.delta_rule_recurrence``.
* ``chunk_gated_delta_rule``, ``fused_recurrent_gated_delta_rule`` (``fla.layers.gated_deltanet``,
  ``fla.layers.mom``) -> in-kernel gate ``fla.ops.gated_delta_rule.gate.naive_gdn_gate``
  (-exp(A_log) * softplus(a + dt_bias)), beta sigmoid (x2 with allow_neg_eigval), q/k heads repeated
  to the value heads, L2 norm as above, then ``naive_recurrent_gated_delta_rule`` per
  ``cu_seqlens`` segment.
* ``chunk_linear_attn``, ``fused_chunk_linear_attn``, ``fused_recurrent_linear_attn``
  (``fla.layers.linear_attn``) -> ``fla.ops.linear_attn.naive.naive_recurrent_linear_attn``.
* ``ShortConvolution.forward`` (every layer) and ``causal_conv1d`` (``fla.layers.gated_deltanet``'s
  fused q/k/v conv) -> depthwise ``F.conv1d`` with left padding W-1 per ``cu_seqlens`` segment,
  + SiLU when the module has an activation.
* ``RMSNorm.forward`` (``fla.modules``) -> ``fla.modules.layernorm.rms_norm_ref``;
  ``FusedRMSNormGated.forward`` -> ``rms_norm_ref(x) * act(g)`` (act = swish or sigmoid);
  ``rms_norm_linear`` (``fla.layers.hgrn2``) -> ``F.linear(rms_norm_ref(x, eps=1e-5), W, b)``
  (fla calls it without eps, so its default 1e-5 applies).
* ``swiglu_linear``, ``swiglu`` (``fla.modules.mlp``) -> ``F.linear(F.silu(gate) * up, W, b)``;
  ``ACT2FN['swish'|'silu'|'sigmoid']``, ``swish`` (hgrn2), ``elu_p1`` -> ``F.silu``,
  ``torch.sigmoid``, ``F.elu(x) + 1``.
* ``rotary_embedding`` (``fla.modules.rotary.ops``) -> ``rotary_embedding_ref``.
* ``MomAttention.forward`` runs with ``Tensor.argsort`` made stable: fla groups the routed tokens
  per memory with an unstable ``argsort``, which on CPU shuffles the tokens inside a memory;
  stable = each memory sees its tokens in time order (the intended semantics).
* ``flash_attn_func`` (``fla.layers.attn``; flash-attn is not installed) ->
  ``F.scaled_dot_product_attention`` with a boolean causal mask; flash-attn's window (W-1, 0)
  keeps key j for query i iff i-W < j <= i; kv heads repeated for GQA.

Greedy decoding: fla's ``generate`` needs the recurrent caches, whose single-step paths call other
Triton kernels, so greedy decoding here re-runs the full forward on the growing sequence and takes
the argmax of the last position (16 steps, no sampling, no eos stop).

Sanity checks done for every fixture (the script fails otherwise):
* the substituted forward is deterministic (two runs are bit-identical) and causal (changing the
  last input token moves no earlier logit by 1e-4 or more);
* an alternative CPU path agrees (max |diff| < 1e-4 on logits): fla's chunkwise naive references
  (``delta_rule_chunkwise``, ``naive_chunk_gated_delta_rule``, ``naive_chunk_linear_attn``)
  instead of the recurrent ones, for GLA/HGRN2 (fla has no second naive GLA) the parallel form
  o_t = sum_{s<=t} (q_t * exp(G_t - G_s)) . k_s v_s written here, and explicit softmax
  attention instead of SDPA;
* reloading the saved directory with ``from_pretrained`` gives identical logits.

Weights: after fla's own initialisation every parameter is replaced by random values of order
one (norm weights 1 + 0.2*N(0,1), biases 0.2*N(0,1), matrices N(0, 1/fan_in), embeddings
N(0,1), or 0.2*N(0,1) when tied to the output layer, HGRN2 lower bounds N(0,1); GDN/MoM
``A_log``/``dt_bias`` keep fla's random init), so a converter that drops a norm weight or a bias,
or swaps two projections, cannot match.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TRITON_CACHE_DIR", "/tmp/fla_fixture_triton_cache")
# The repository's top-level `kernels/` folder would shadow the PyPI package `kernels` that
# transformers probes for: keep the repository root (and the working directory) off sys.path.
_ROOT = Path(__file__).resolve().parents[2]
sys.path[:] = [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != _ROOT]
warnings.filterwarnings("ignore")

import fla  # noqa: E402
import fla.layers.attn  # noqa: E402
import fla.layers.delta_net  # noqa: E402
import fla.layers.gated_deltanet  # noqa: E402
import fla.layers.gla  # noqa: E402
import fla.layers.hgrn2  # noqa: E402
import fla.layers.linear_attn  # noqa: E402
import fla.layers.mom  # noqa: E402
import fla.modules.activations  # noqa: E402
import fla.modules.causal_conv1d.ops  # noqa: E402
import fla.modules.mlp  # noqa: E402
import fla.modules.norm.fused_norm_gate  # noqa: E402
import fla.modules.norm.layernorm  # noqa: E402
import fla.modules.rotary.ops  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from fla.models import (  # noqa: E402
    DeltaNetConfig,
    DeltaNetForCausalLM,
    GatedDeltaNetConfig,
    GatedDeltaNetForCausalLM,
    GLAConfig,
    GLAForCausalLM,
    HGRN2Config,
    HGRN2ForCausalLM,
    LinearAttentionConfig,
    LinearAttentionForCausalLM,
    MomConfig,
    MomForCausalLM,
    TransformerConfig,
    TransformerForCausalLM,
)
from fla.modules.layernorm import rms_norm_ref  # noqa: E402
from fla.modules.rotary.ops import rotary_embedding_ref  # noqa: E402
from fla.ops.delta_rule.naive import delta_rule_chunkwise, delta_rule_recurrence  # noqa: E402
from fla.ops.gated_delta_rule.gate import naive_gdn_gate  # noqa: E402
from fla.ops.gated_delta_rule.naive import (  # noqa: E402
    naive_chunk_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)
from fla.ops.gla.naive import naive_recurrent_gla  # noqa: E402
from fla.ops.linear_attn.naive import naive_chunk_linear_attn, naive_recurrent_linear_attn  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT_ROOT = REPO / "tests" / "convert" / "fixtures" / "fla"
SEED = 0
BATCH, SEQ_LEN = 2, 32
PROMPT_LEN, GREEDY_STEPS = 8, 16
ALT_TOL = 1e-4
MIN_MARGIN = 1e-2  # smallest accepted top-1 minus top-2 logit gap along the greedy continuation
MIN_DISTINCT = 6  # the greedy continuation must not collapse onto fewer distinct tokens
TIED_EMBED_STD = 0.2  # embedding scale of tied models (their logits are h . embedding)
MIN_ROUTER_GAP = 1e-4  # smallest accepted gap between the k-th and (k+1)-th MoM router score

# When True the substitutes use the chunkwise naive references / explicit softmax (sanity check).
_ALT = {"on": False}


# ----------------------------------------------------------------------------- substitutes
def _l2norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(sum(x^2) + 1e-6) over the last axis (fla's in-kernel q/k L2 norm)."""
    x = x.float()
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def _segments(cu_seqlens, total: int) -> list[tuple[int, int]]:
    if cu_seqlens is None:
        return [(0, total)]
    cu = [int(c) for c in cu_seqlens.tolist()]
    return list(zip(cu[:-1], cu[1:], strict=True))


def _gla(
    q,
    k,
    v,
    gk=None,
    g=None,
    scale=None,
    initial_state=None,
    output_final_state=False,
    cu_seqlens=None,
    **kwargs,
):
    """[B,T,H,K] GLA recurrence via naive_recurrent_gla (scale K^-1/2 only)."""
    gk = gk if gk is not None else g
    assert cu_seqlens is None and initial_state is None and not output_final_state
    assert scale is None or math.isclose(scale, q.shape[-1] ** -0.5)
    if _ALT[
        "on"
    ]:  # parallel form: o_t = sum_{s<=t} (q_t * exp(G_t - G_s) * K^-1/2) . k_s v_s, G = cumsum(gk)
        q, k, v, gk = (x.float().transpose(1, 2) for x in (q, k, v, gk))
        G = gk.cumsum(2)
        decay = torch.exp(G[:, :, :, None, :] - G[:, :, None, :, :])  # [B,H,T,S,K]
        T = q.shape[2]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        A = torch.einsum("bhtk,bhtsk,bhsk->bhts", q * q.shape[-1] ** -0.5, decay, k)
        o = A.masked_fill(~causal, 0.0) @ v
        return o.transpose(1, 2), None
    o, _ = naive_recurrent_gla(q, k, v, gk)
    return o, None


def _delta_rule(
    q,
    k,
    v,
    beta,
    scale=None,
    initial_state=None,
    output_final_state=False,
    cu_seqlens=None,
    use_qk_l2norm_in_kernel=False,
    **kwargs,
):
    """[B,T,H,K] delta rule via delta_rule_recurrence ([B,H,T,K] layout)."""
    assert cu_seqlens is None and initial_state is None and not output_final_state
    assert scale is None
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    q, k, v, beta = (x.transpose(1, 2).float() for x in (q, k, v, beta))
    if _ALT["on"]:
        T = q.shape[2]
        chunk = 16 if T % 16 == 0 else (8 if T % 8 == 0 else 1)
        if chunk == 1:
            o, _ = delta_rule_recurrence(q, k, v, beta)
        else:
            o, _ = delta_rule_chunkwise(q, k, v, beta, chunk_size=chunk)
    else:
        o, _ = delta_rule_recurrence(q, k, v, beta)
    return o.transpose(1, 2), None


def _gated_delta_rule(
    q,
    k,
    v,
    g=None,
    beta=None,
    scale=None,
    initial_state=None,
    output_final_state=False,
    use_qk_l2norm_in_kernel=False,
    use_gate_in_kernel=False,
    A_log=None,
    dt_bias=None,
    use_beta_sigmoid_in_kernel=False,
    allow_neg_eigval=False,
    cu_seqlens=None,
    gk=None,
    gv=None,
    **kwargs,
):
    """[B,T,H,K] gated delta rule, per cu_seqlens segment, via the naive references."""
    assert gk is None and gv is None and initial_state is None and not output_final_state
    if use_gate_in_kernel:
        g = naive_gdn_gate(g, A_log, dt_bias)
    if use_beta_sigmoid_in_kernel:
        beta = beta.float().sigmoid()
        if allow_neg_eigval:
            beta = beta * 2.0
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    H, HV = q.shape[2], v.shape[2]
    if HV != H:  # value head i reads q/k head i // (HV // H)
        q, k = (x.repeat_interleave(HV // H, dim=2) for x in (q, k))
    outs = []
    for bos, eos in _segments(cu_seqlens, q.shape[1]):
        args = [x[:, bos:eos].float() for x in (q, k, v)]
        gs, bs = g[:, bos:eos].float(), beta[:, bos:eos].float()
        if _ALT["on"]:
            o, _ = naive_chunk_gated_delta_rule(*args, g=gs, beta=bs, chunk_size=8, scale=scale)
        else:
            o, _ = naive_recurrent_gated_delta_rule(*args, beta=bs, g=gs, scale=scale)
        outs.append(o)
    return torch.cat(outs, dim=1).to(v.dtype), None


def _linear_attn(
    q,
    k,
    v,
    scale=None,
    initial_state=None,
    output_final_state=False,
    normalize=False,
    cu_seqlens=None,
    **kwargs,
):
    assert cu_seqlens is None and initial_state is None and not output_final_state
    if _ALT["on"]:  # the chunk reference needs T % 64 == 0: zero-pad the tail (causal, so harmless)
        T = q.shape[1]
        pad = (-T) % 64
        q, k, v = (F.pad(x.float(), (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
        o = naive_chunk_linear_attn(q, k, v, scale=scale, normalize=normalize)[:, :T]
    else:
        o, _ = naive_recurrent_linear_attn(q, k, v, scale=scale, normalize=normalize)
    return o, None


def _causal_conv(x, weight, bias, activation, cu_seqlens=None):
    """Depthwise causal conv, zero history per segment: y[t] = sum_j w[:, j] x[t-(W-1)+j] (+ b)."""
    W = weight.shape[-1]
    outs = []
    for bos, eos in _segments(cu_seqlens, x.shape[1]):
        xs = x[:, bos:eos].transpose(1, 2)
        y = F.conv1d(xs, weight.unsqueeze(1), bias, padding=W - 1, groups=weight.shape[0])[
            ..., : eos - bos
        ]
        outs.append(y.transpose(1, 2))
    y = torch.cat(outs, dim=1)
    if activation in ("silu", "swish"):
        y = F.silu(y)
    return y


def _short_conv_forward(
    self,
    x,
    residual=None,
    mask=None,
    cache=None,
    output_final_state=False,
    cu_seqlens=None,
    **kwargs,
):
    assert residual is None and cache is None and not output_final_state
    if mask is not None:
        x = x * mask.unsqueeze(-1)
    return _causal_conv(x, self.weight.squeeze(1), self.bias, self.activation, cu_seqlens), None


def _causal_conv1d(
    x,
    weight,
    bias=None,
    residual=None,
    initial_state=None,
    output_final_state=False,
    activation=None,
    cu_seqlens=None,
    **kwargs,
):
    assert residual is None and initial_state is None and not output_final_state
    return _causal_conv(x, weight, bias, activation, cu_seqlens), None


def _rms_norm_forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
    return rms_norm_ref(x, self.weight, self.bias, residual=residual, eps=self.eps, prenorm=prenorm)


def _rms_norm_gated_forward(self, x, g, residual=None, prenorm=False, residual_in_fp32=False):
    assert residual is None and not prenorm
    y = rms_norm_ref(x, self.weight, self.bias, eps=self.eps)
    if self.activation in ("swish", "silu"):
        return y * F.silu(g)
    return y * torch.sigmoid(g)


def _rms_norm_linear(
    x,
    norm_weight,
    norm_bias,
    linear_weight,
    linear_bias,
    residual=None,
    eps=1e-5,
    prenorm=False,
    residual_in_fp32=False,
):
    assert residual is None and not prenorm
    return F.linear(rms_norm_ref(x, norm_weight, norm_bias, eps=eps), linear_weight, linear_bias)


def _rotary_embedding(
    x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None, **kwargs
):
    assert cu_seqlens is None and isinstance(seqlen_offsets, int)
    T = x.shape[1]
    return rotary_embedding_ref(
        x,
        cos[seqlen_offsets : seqlen_offsets + T],
        sin[seqlen_offsets : seqlen_offsets + T],
        interleaved=interleaved,
    )


def _flash_attn_func(q, k, v, causal=True, window_size=(-1, -1), softmax_scale=None, **kwargs):
    """[B,T,H,D] causal attention; window (left, 0) keeps keys j with i - left <= j <= i."""
    assert causal
    B, T, H, D = q.shape
    if k.shape[2] != H:
        k, v = (x.repeat_interleave(H // k.shape[2], dim=2) for x in (k, v))
    i = torch.arange(T)[:, None]
    j = torch.arange(k.shape[1])[None, :] + (T - k.shape[1])
    allowed = j <= i
    if window_size[0] >= 0:
        allowed &= j >= i - window_size[0]
    q, k, v = (x.transpose(1, 2).float() for x in (q, k, v))
    scale = D**-0.5 if softmax_scale is None else softmax_scale
    if _ALT["on"]:
        s = (q @ k.transpose(-1, -2)) * scale
        s = s.masked_fill(~allowed, float("-inf"))
        o = s.softmax(-1) @ v
    else:
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)
    return o.transpose(1, 2)


_TENSOR_ARGSORT = torch.Tensor.argsort


def _stable_argsort(self, dim=-1, descending=False, stable=False):
    return _TENSOR_ARGSORT(self, dim=dim, descending=descending, stable=True)


def _mom_forward_time_ordered(forward):
    """MomAttention.forward with a stable ``argsort``, so each memory sees its tokens in time order.

    fla sorts the routed tokens by (batch row, memory) with ``combined.argsort()``, which is not
    stable: torch's CPU sort then permutes the tokens inside a memory, so the memory's short conv
    and recurrence would run over a shuffled sequence. A stable sort is one valid result of that
    call and gives the intended (time-ordered) semantics.
    """

    def wrapped(self, *args, **kwargs):
        torch.Tensor.argsort = _stable_argsort
        try:
            return forward(self, *args, **kwargs)
        finally:
            torch.Tensor.argsort = _TENSOR_ARGSORT

    return wrapped


def install_cpu_substitutes() -> None:
    """Rebind every Triton-backed name the fla layers use to a torch reference (see module doc)."""
    L = fla.layers
    for mod in (L.gla, L.hgrn2):
        mod.chunk_gla = mod.fused_recurrent_gla = mod.fused_chunk_gla = _gla
    L.delta_net.chunk_delta_rule = L.delta_net.fused_recurrent_delta_rule = _delta_rule
    for mod in (L.gated_deltanet, L.mom):
        mod.chunk_gated_delta_rule = mod.fused_recurrent_gated_delta_rule = _gated_delta_rule
    L.linear_attn.chunk_linear_attn = _linear_attn
    L.linear_attn.fused_chunk_linear_attn = _linear_attn
    L.linear_attn.fused_recurrent_linear_attn = _linear_attn
    fla.modules.causal_conv1d.ops.ShortConvolution.forward = _short_conv_forward
    L.gated_deltanet.causal_conv1d = _causal_conv1d
    fla.modules.norm.layernorm.RMSNorm.forward = _rms_norm_forward
    fla.modules.norm.fused_norm_gate.FusedRMSNormGated.forward = _rms_norm_gated_forward
    L.hgrn2.rms_norm_linear = _rms_norm_linear
    L.hgrn2.swish = F.silu
    fla.modules.mlp.swiglu_linear = lambda x, y, w, b: F.linear(F.silu(x) * y, w, b)
    fla.modules.mlp.swiglu = lambda x, y: F.silu(x) * y
    act = fla.modules.activations.ACT2FN
    act["swish"] = act["silu"] = F.silu
    act["sigmoid"] = torch.sigmoid
    elu_p1 = lambda x: F.elu(x) + 1.0  # noqa: E731
    L.linear_attn.elu_p1 = L.delta_net.elu_p1 = elu_p1
    fla.modules.rotary.ops.rotary_embedding = _rotary_embedding
    L.attn.flash_attn_func = _flash_attn_func
    L.attn.flash_attn_varlen_func = None  # padding masks are never used here
    L.mom.MomAttention.forward = _mom_forward_time_ordered(L.mom.MomAttention.forward)


# ----------------------------------------------------------------------------- fixtures
SMALL = dict(vocab_size=128, intermediate_size=64)

FAMILIES: dict[str, tuple[type, type]] = {
    "gla": (GLAConfig, GLAForCausalLM),
    "delta_net": (DeltaNetConfig, DeltaNetForCausalLM),
    "gated_deltanet": (GatedDeltaNetConfig, GatedDeltaNetForCausalLM),
    "hgrn2": (HGRN2Config, HGRN2ForCausalLM),
    "linear_attn": (LinearAttentionConfig, LinearAttentionForCausalLM),
    "mom": (MomConfig, MomForCausalLM),
    "transformer": (TransformerConfig, TransformerForCausalLM),
}
D32L2 = dict(hidden_size=32, num_hidden_layers=2)

# name -> (family, config options besides SMALL). Family defaults are kept where practical.
FIXTURES: dict[str, tuple[str, dict]] = {
    # GLA defaults: expand_k 0.5, no short conv, output gate with fused swish-gated RMSNorm.
    "gla": ("gla", dict(**D32L2, num_heads=2)),
    "gla_conv_tied": (
        "gla",
        dict(**D32L2, num_heads=2, use_short_conv=True, tie_word_embeddings=True),
    ),
    # DeltaNet defaults: short conv, SiLU q/k, L2 q/k norm, no output gate.
    "delta_net": ("delta_net", dict(**D32L2, num_heads=2)),
    "delta_net_gate": (
        "delta_net",
        dict(**D32L2, num_heads=2, use_gate=True, allow_neg_eigval=True),
    ),
    # Gated DeltaNet defaults: expand_v 2, output gate, short conv.
    "gated_deltanet": ("gated_deltanet", dict(**D32L2, num_heads=2, head_dim=16)),
    "gated_deltanet_gva_tied": (
        "gated_deltanet",
        dict(
            **D32L2, num_heads=2, head_dim=16, num_v_heads=4, expand_v=1.0, tie_word_embeddings=True
        ),
    ),
    # HGRN2: num_heads = hidden_size // expand_ratio; lower bounds on.
    "hgrn2": ("hgrn2", dict(**D32L2, expand_ratio=16)),
    "hgrn2_conv": ("hgrn2", dict(**D32L2, expand_ratio=16, use_short_conv=True)),
    # Linear attention defaults: Hadamard ("elementwise_product") feature map, RMSNorm output.
    "linear_attn": ("linear_attn", dict(**D32L2, num_heads=2)),
    "linear_attn_elu_norm": (
        "linear_attn",
        dict(**D32L2, num_heads=2, feature_map="elu", norm_feature_map=True),
    ),
    # MoM (gated_deltanet backend): 4 memories, top-2, shared memory.
    "mom": ("mom", dict(**D32L2, num_heads=2, head_dim=16, num_memories=4, topk=2)),
    "mom_noshared_top1": (
        "mom",
        dict(**D32L2, num_heads=2, head_dim=16, num_memories=3, topk=1, shared_mem=False),
    ),
    "transformer": ("transformer", dict(**D32L2, num_heads=4)),
    "transformer_gqa_qknorm": (
        "transformer",
        dict(
            **D32L2,
            num_heads=4,
            num_kv_heads=2,
            qk_norm=True,
            qkv_bias=True,
            tie_word_embeddings=True,
        ),
    ),
    # Hybrids: fla's `attn` dict turns the listed layers into (sliding-window) softmax attention.
    "gated_deltanet_hybrid": (
        "gated_deltanet",
        dict(
            hidden_size=32,
            num_hidden_layers=4,
            num_heads=2,
            head_dim=16,
            attn=dict(layers=[1, 3], num_heads=4, num_kv_heads=2),
        ),
    ),
    "gla_swa_hybrid": (
        "gla",
        dict(
            hidden_size=32,
            num_hidden_layers=3,
            num_heads=2,
            attn=dict(layers=[1], num_heads=2, window_size=8, rope_theta=500.0),
        ),
    ),
}


def randomize_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Replace fla's init by order-one random values (see module doc)."""
    tied = bool(model.config.tie_word_embeddings)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("A_log", "dt_bias"):
                continue
            noise = torch.randn(p.shape, generator=gen)
            if "embeddings" in name:  # tied: smaller, else each token mostly predicts itself
                p.copy_(noise * (TIED_EMBED_STD if tied else 1.0))
            elif leaf == "lower_bounds":
                p.copy_(noise)
            elif leaf == "bias":
                p.copy_(0.2 * noise)
            elif p.ndim == 1:
                p.copy_(1.0 + 0.2 * noise)
            else:
                fan_in = p[0].numel()
                p.copy_(noise / math.sqrt(fan_in))


def forward_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits.float()


def greedy(model, prompt: torch.Tensor, steps: int) -> tuple[torch.Tensor, float]:
    """Greedy continuation and the smallest top-1 minus top-2 logit gap over the steps."""
    seq, margin = prompt, math.inf
    for _ in range(steps):
        last = forward_logits(model, seq)[:, -1]
        top2 = last.topk(2, dim=-1).values
        margin = min(margin, float((top2[:, 0] - top2[:, 1]).min()))
        seq = torch.cat([seq, last.argmax(-1, keepdim=True)], dim=1)
    return seq[:, prompt.shape[1] :], margin


class RouterGaps:
    """Records, for MoM routers, the smallest gap between the k-th and (k+1)-th softmax score."""

    def __init__(self, model) -> None:
        self.gap = math.inf
        self.handles = []
        for name, module in model.named_modules():
            if name.endswith("attn.gate") and hasattr(module, "weight"):
                self.handles.append(module.register_forward_hook(self._hook(model.config.topk)))

    def _hook(self, topk: int):
        def hook(module, args, output):
            scores = output.float().softmax(-1).sort(-1, descending=True).values
            if scores.shape[-1] > topk:
                gap = scores[..., topk - 1] - scores[..., topk]
                self.gap = min(self.gap, float(gap.min()))

        return hook


def make_fixture(name: str) -> dict:
    family, kwargs = FIXTURES[name]
    cfg_cls, model_cls = FAMILIES[family]
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    config = cfg_cls(**{**SMALL, **kwargs})
    model = model_cls(config).float().eval()
    randomize_(model, gen)

    ids = torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN), generator=gen)
    prompt = torch.randint(0, config.vocab_size, (1, PROMPT_LEN), generator=gen)

    logits = forward_logits(model, ids)
    again = forward_logits(model, ids)
    assert torch.equal(logits, again), f"{name}: substituted forward is not deterministic"
    _ALT["on"] = True
    try:
        alt = forward_logits(model, ids)
    finally:
        _ALT["on"] = False
    alt_diff = (alt - logits).abs().max().item()
    assert alt_diff < ALT_TOL, f"{name}: alternative CPU path differs by {alt_diff}"
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % config.vocab_size
    leak = (forward_logits(model, changed)[:, :-1] - logits[:, :-1]).abs().max().item()
    assert leak < ALT_TOL, f"{name}: not causal, earlier logits moved by {leak}"
    # Redraw the prompt until every greedy step has a clear winner (top-1 minus top-2 logit gap
    # >= MIN_MARGIN), so a float32 reimplementation cannot flip a near-tie, and the continuation
    # is not a repeated token (which would test little).
    for _ in range(50):
        tokens, margin = greedy(model, prompt, GREEDY_STEPS)
        if margin >= MIN_MARGIN and len(set(tokens[0].tolist())) >= MIN_DISTINCT:
            break
        prompt = torch.randint(0, config.vocab_size, (1, PROMPT_LEN), generator=gen)
    else:
        raise AssertionError(f"{name}: no prompt with margins >= {MIN_MARGIN}, varied tokens")
    router_gap = math.nan
    if family == "mom":  # routing near-ties would make top-k selection implementation-dependent
        gaps = RouterGaps(model)
        forward_logits(model, ids)
        forward_logits(model, torch.cat([prompt, tokens], dim=1))
        router_gap = gaps.gap
        assert router_gap >= MIN_ROUTER_GAP, f"{name}: router top-k gap {router_gap}"

    out = OUT_ROOT / name
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    reloaded = model_cls.from_pretrained(out).float().eval()
    assert torch.equal(forward_logits(reloaded, ids), logits), f"{name}: reload changed the logits"
    np.savez(
        out / "reference.npz",
        input_ids=ids.numpy().astype(np.int32),
        logits=logits.numpy().astype(np.float32),
        greedy_prompt=prompt.numpy().astype(np.int32),
        greedy_tokens=tokens.numpy().astype(np.int32),
    )
    size = sum(f.stat().st_size for f in out.iterdir())
    return dict(
        name=name,
        model_type=config.model_type,
        options=kwargs,
        alt_diff=alt_diff,
        greedy_margin=margin,
        router_gap=router_gap,
        bytes=size,
        logits_std=float(logits.std()),
    )


README_HEAD = """# flash-linear-attention reference fixtures

Tiny random models built with fla's own classes, saved with `save_pretrained` (float32
safetensors), and fla's outputs on CPU. Made by `experiments/fla_fixtures/make_fla_fixtures.py`
(never run by CI; its docstring says how to set up its venv):

    /work/flavenv/bin/python experiments/fla_fixtures/make_fla_fixtures.py

Versions: {versions}.

`reference.npz`: `input_ids` [2, 32] int32, `logits` [2, 32, V] float32 (fla forward, no cache),
`greedy_prompt` [1, 8] int32, `greedy_tokens` [1, 16] int32 (greedy: full forward on the growing
sequence, argmax of the last position, 16 steps; fla's cached `generate` needs Triton).

{substitutions}

Each fixture was checked: deterministic and causal; equal within 1e-4 (`alt_diff`, max abs over
logits) to a second CPU path (fla's chunkwise naive references, a parallel GLA form, explicit
softmax attention); unchanged after `from_pretrained`. Parameters are order-one random values
(not fla's init) so every tensor matters. Tied models have no `lm_head.weight` tensor.

`experiments/fla_fixtures/numpy_reference.py` (numpy + safetensors only, no torch) is a float64
forward of these models written from fla's conventions; it reproduces every fixture's logits
(relative RMS <= 1.3e-6) and greedy tokens.

`greedy margin`: smallest top-1 minus top-2 logit gap along the greedy continuation (the prompt
is redrawn until it is >= 1e-2 and the 16 tokens hold >= 6 distinct values); `router gap` (MoM):
smallest gap between the k-th and (k+1)-th router softmax score over the fixture input and the
greedy sequence.

| fixture | model_type | options (+ vocab 128, intermediate 64) | alt_diff | greedy margin \
| router gap | logits std | bytes |
|---|---|---|---|---|---|---|---|
"""


def write_readme(rows: list[dict]) -> None:
    versions = (
        f"flash-linear-attention {fla.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, numpy {np.__version__}"
    )
    doc = __doc__ or ""
    substitutions = doc[doc.index("CPU substitutions.") : doc.index("Greedy decoding:")].strip()
    head = README_HEAD.format(versions=versions, substitutions=substitutions)
    lines = [head.rstrip("\n")]
    for r in rows:
        opts = json.dumps(r["options"], sort_keys=True)
        gap = r["router_gap"]
        lines.append(
            f"| {r['name']} | {r['model_type']} | `{opts}` | {r['alt_diff']:.1e} | "
            f"{r['greedy_margin']:.3f} | {'-' if math.isnan(gap) else f'{gap:.1e}'} | "
            f"{r['logits_std']:.2f} | "
            f"{r['bytes']} |"
        )
    (OUT_ROOT / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="fixture names (default: all)")
    args = parser.parse_args(argv)
    install_cpu_substitutes()
    names = args.only or list(FIXTURES)
    unknown = [n for n in names if n not in FIXTURES]
    if unknown:
        parser.error(f"unknown fixture(s) {unknown}; choose from {sorted(FIXTURES)}")
    OUT_ROOT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        row = make_fixture(name)
        print(f"{name}: alt_diff={row['alt_diff']:.2e} bytes={row['bytes']}", flush=True)
        rows.append(row)
    if args.only is None:
        write_readme(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
