"""Recall under a KV budget: MQAR accuracy when the model *decodes* with an evicting cache.

The context (the key–value pairs, ``2N`` tokens) is prefilled in one call; every later token is
fed one at a time through the decode caches (teacher forcing), so each eviction policy decides,
after the prefill and after every token, which keys the decay-attention layers (``fox``,
``trimkv``) keep. Accuracy is argmax == value at the query positions, as in
:func:`memarch.eval.mqar.evaluate_mqar`. Other layers decode with their usual caches.
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
from memarch.data.pipeline import eval_batches
from memarch.kvcache.policies import EvictionPolicy
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


def decode_logits(model: nnx.Module, inputs: jax.Array, prefill: int) -> jax.Array:
    """Logits ``[B, T, V]`` of ``inputs [B, T]``: prefill ``[:prefill]``, then token by token."""
    graphdef, state = nnx.split(model)
    return _decode(graphdef, state, jnp.asarray(inputs), prefill)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _decode(graphdef, state, inputs, prefill):
    m = nnx.merge(graphdef, state)
    b, t = inputs.shape
    cache = m.init_cache(b, t, jnp.float32)
    first, cache = m(inputs[:, :prefill], cache=cache)

    def step(c, tok):
        logits, c = m(tok[:, None], cache=c)
        return c, logits[:, 0]

    _, rest = jax.lax.scan(step, cache, inputs[:, prefill:].T)
    return jnp.concatenate([first, jnp.swapaxes(rest, 0, 1)], axis=1)


def recall_under_budget(
    model: nnx.Module,
    cfg: DataConfig,
    seq_len: int,
    num_pairs: int,
    policies: Mapping[str, EvictionPolicy | None],
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    """MQAR accuracy of the (L, N) slice for each named policy (None = full cache)."""
    prefill = 2 * num_pairs * cfg.num_passes  # the key–value context
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


def markdown_table(results: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> str:
    """Rows = policies, columns = budget labels; cells = accuracy."""
    rows = ["| policy | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, r in results.items():
        rows.append(f"| {name} | " + " | ".join(
            f"{r[c]:.3f}" if c in r else "—" for c in columns) + " |")
    return "\n".join(rows)


def plot_recall(results: Mapping[str, Mapping[str, float]], columns: Sequence[str], path: str,
                *, title: str) -> None:
    """Accuracy vs budget, one line per policy, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        style = dict(color="black", linestyle="--", marker="") if name.startswith("full") else {}
        ax.plot(list(columns), [r.get(c, np.nan) for c in columns],
                **{"marker": "o", "label": name, **style})
    ax.set_xlabel("KV budget per (layer, KV head), % of the sequence")
    ax.set_ylabel("MQAR accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
