"""Recall under a KV budget: MQAR / needle accuracy when the model *decodes* with an evicting
cache.

The prompt before the first query — the key–value context (``2NP`` tokens, task ``mqar``) or
the haystack with its needles (``L − N·m`` tokens, task ``needle``;
:func:`memarch.data.pipeline.prompt_len`) — is prefilled in one call; every later token is fed
one at a time through the decode caches (teacher forcing), so each eviction policy decides,
after the prefill and after every token, which keys the decay-attention layers (``fox``,
``trimkv``) keep. Accuracy is argmax == value at the labelled positions, as in
:func:`memarch.eval.recall.evaluate_slices`. Other layers decode with their usual caches.

Global budget: when the layers carry :class:`memarch.kvcache.GlobalRetentionEviction`, the
decoding loop applies :func:`memarch.kvcache.keep_global` to the layer caches after every model
call, so ``Σ_{layers, KV heads} kept ≤ total``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch.data.config import DataConfig
from memarch.data.mqar import IGNORE_INDEX
from memarch.data.pipeline import eval_batches, prompt_len
from memarch.eval.plots import subplots
from memarch.kvcache.global_budget import keep_global
from memarch.kvcache.policies import (
    H2O,
    TOVA,
    EvictionPolicy,
    GlobalRetentionEviction,
    RetentionEviction,
    SnapKV,
    StreamingLLM,
)
from memarch.mixers._decay_attention import DecayAttention


def with_eviction(model: nnx.Module, policy: EvictionPolicy | None) -> nnx.Module:
    """A copy of ``model`` (same parameters) whose decay-attention layers decode under
    ``policy`` (None = keep every key)."""
    clone = nnx.clone(model)
    found = False
    for _, m in nnx.iter_graph(clone):
        if isinstance(m, DecayAttention):
            m.config = dataclasses.replace(m.config, eviction=policy)
            found = True
    if not found:
        raise ValueError("model has no decay-attention layer (fox / trimkv) to evict from")
    return clone


def global_total(model: nnx.Module) -> int | None:
    """The global budget ``total`` of the model's :class:`GlobalRetentionEviction` layers, or
    None when no layer has one. Every decay-attention layer must then share it."""
    layers = [m for _, m in nnx.iter_graph(model) if isinstance(m, DecayAttention)]
    policies = [m.config.eviction for m in layers]
    totals = {p.total for p in policies if isinstance(p, GlobalRetentionEviction)}
    if not totals:
        return None
    if len(totals) > 1 or not all(isinstance(p, GlobalRetentionEviction) for p in policies):
        raise ValueError(
            "a global budget needs every decay-attention layer under one "
            f"GlobalRetentionEviction total; got {policies}"
        )
    return totals.pop()


def budgeted_call(model: nnx.Module, tokens: jax.Array, cache: list, total: int | None):
    """One model call on the decode caches, then the global keep when ``total`` is set:
    ``(logits [B, T, V], cache)``."""
    logits, cache = model(tokens, cache=cache)
    if total is not None:
        cache = keep_global(cache, total)
    return logits, cache


def decode_logits(model: nnx.Module, inputs: jax.Array, prefill: int) -> jax.Array:
    """Logits ``[B, T, V]`` of ``inputs [B, T]``: prefill ``[:prefill]``, then token by token
    (under the model's global budget, if any)."""
    graphdef, state = nnx.split(model)
    return _decode(graphdef, state, jnp.asarray(inputs), prefill, global_total(model))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _decode(graphdef, state, inputs, prefill, total):
    m = nnx.merge(graphdef, state)
    b, t = inputs.shape
    cache = m.init_cache(b, t, jnp.float32)
    first, cache = budgeted_call(m, inputs[:, :prefill], cache, total)

    def step(c, tok):
        logits, c = budgeted_call(m, tok[:, None], c, total)
        return c, logits[:, 0]

    _, rest = jax.lax.scan(step, cache, inputs[:, prefill:].T)
    return jnp.concatenate([first, jnp.swapaxes(rest, 0, 1)], axis=1)


def baseline_policies(budget: int) -> dict[str, EvictionPolicy]:
    """The compared policies at ``budget`` M keys per (layer, KV head), by display name."""
    return {
        "trimkv (learned retention)": RetentionEviction(budget=budget),
        "streaming_llm (4 sinks)": StreamingLLM(budget=budget, sinks=4),
        "h2o (recent = M/2)": H2O(budget=budget),
        "snapkv (window 8, kernel 5)": SnapKV(budget=budget, window=min(8, budget), kernel=5),
        "tova": TOVA(budget=budget),
    }


GLOBAL_ROW = "trimkv global (one budget over layers × KV heads)"


def kv_buffers(model: nnx.Module) -> int:
    """Number of (decay-attention layer, KV head) buffers of ``model``."""
    return sum(m.num_kv_heads for _, m in nnx.iter_graph(model) if isinstance(m, DecayAttention))


def global_policy(budget: int, seq_len: int, num_buffers: int) -> GlobalRetentionEviction:
    """The global counterpart of ``budget`` keys per (layer, KV head), same total memory:
    ``total = budget · num_buffers`` shared by every buffer, each capped at ``seq_len``."""
    return GlobalRetentionEviction(budget=seq_len, total=budget * num_buffers)


def recall_under_budget(
    model: nnx.Module,
    cfg: DataConfig,
    seq_len: int,
    num_pairs: int,
    policies: Mapping[str, EvictionPolicy | None],
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    """Accuracy of the (L, N) slice of task ``cfg.task`` (``mqar``: N pairs, ``needle``: N
    needles) for each named policy (None = full cache); the prompt before the first query is
    prefilled."""
    prefill = prompt_len(cfg, seq_len, num_pairs)
    out = {}
    for name, policy in policies.items():
        m = with_eviction(model, policy)
        correct = total = 0
        for batch in eval_batches(cfg, seq_len, num_pairs, batch_size):
            logits = decode_logits(m, batch["inputs"], prefill)
            mask = batch["targets"] != IGNORE_INDEX
            correct += int(np.sum((np.argmax(logits, -1) == batch["targets"]) & mask))
            total += int(np.sum(mask))
        out[name] = correct / max(total, 1)
    return out


def recall_by_depth(
    model: nnx.Module,
    cfg: DataConfig,
    seq_len: int,
    depths: Sequence[float],
    policies: Mapping[str, EvictionPolicy | None],
    *,
    batch_size: int = 64,
) -> dict[str, dict[float, float]]:
    """Needle accuracy (one needle of length ``seq_len``) at each fixed ``depth`` (%), per
    policy: ``{policy: {depth: accuracy}}``."""
    if cfg.task != "needle":
        raise ValueError(f"recall_by_depth needs data.task='needle'; got {cfg.task!r}")
    out: dict[str, dict[float, float]] = {name: {} for name in policies}
    for depth in depths:
        at = dataclasses.replace(cfg, needle_depth=float(depth))
        acc = recall_under_budget(model, at, seq_len, 1, policies, batch_size=batch_size)
        for name, a in acc.items():
            out[name][depth] = a
    return out


def markdown_table(
    results: Mapping[str, Mapping[str, float]], columns: Sequence[str], *, row_label="policy"
) -> str:
    """Rows = policies (or ``row_label``), columns = budget labels; cells = accuracy."""
    rows = [f"| {row_label} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, r in results.items():
        rows.append(
            f"| {name} | " + " | ".join(f"{r[c]:.3f}" if c in r else "—" for c in columns) + " |"
        )
    return "\n".join(rows)


def plot_recall(
    results: Mapping[str, Mapping[str, float]],
    columns: Sequence[str],
    path: str,
    *,
    title: str,
    ylabel: str = "MQAR accuracy",
) -> None:
    """Accuracy vs budget, one line per policy, saved as PNG."""
    fig, ax = subplots(6, 4)
    for name, r in results.items():
        style = dict(color="black", linestyle="--", marker="") if name.startswith("full") else {}
        ax.plot(
            list(columns),
            [r.get(c, np.nan) for c in columns],
            **{"marker": "o", "label": name, **style},
        )
    ax.set_xlabel("KV budget per (layer, KV head), % of the sequence")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
