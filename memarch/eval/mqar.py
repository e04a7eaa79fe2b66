"""MQAR evaluation: accuracy per (sequence length, number of pairs), tables and plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch.data.config import DataConfig
from memarch.data.mqar import IGNORE_INDEX
from memarch.data.pipeline import eval_batches
from memarch.models.forward import forward


def make_eval_step(graphdef: Any):
    """Returns ``step(model_state, batch) -> (correct [B, T] bool, mask [B, T] bool)``."""

    @jax.jit
    def eval_step(state, batch):
        model = nnx.merge(graphdef, state)
        logits, _, _ = forward(model, batch)
        mask = batch["targets"] != IGNORE_INDEX
        return (jnp.argmax(logits, -1) == batch["targets"]) & mask, mask

    return eval_step


def evaluate_mqar(
    model: nnx.Module,
    cfg: DataConfig,
    slices: Sequence[tuple[int, int]] | None = None,
    *,
    batch_size: int = 64,
) -> dict[tuple[int, int], float]:
    """Accuracy (argmax == value, averaged over query positions) for each (L, N) slice."""
    graphdef, state = nnx.split(model)
    step = make_eval_step(graphdef)
    out = {}
    for length, pairs in slices if slices is not None else cfg.eval_slices:
        correct = total = 0
        for batch in eval_batches(cfg, length, pairs, batch_size):
            ok, mask = step(state, batch)
            correct += int(np.asarray(ok).sum())
            total += int(np.asarray(mask).sum())
        out[(length, pairs)] = correct / max(total, 1)
    return out


def markdown_table(results: Mapping[str, Mapping[tuple[int, int], float]]) -> str:
    """Rows = models, columns = slices ``L=…, N=…``; cells = accuracy."""
    slices = sorted({s for r in results.values() for s in r})
    head = "| model | " + " | ".join(f"L={l}, N={n}" for l, n in slices) + " | mean |"
    sep = "|---" * (len(slices) + 2) + "|"
    rows = [head, sep]
    for name, r in results.items():
        cells = [f"{r[s]:.3f}" if s in r else "—" for s in slices]
        mean = np.mean([r[s] for s in slices if s in r])
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {mean:.3f} |")
    return "\n".join(rows)


def plot_accuracy(
    results: Mapping[str, Mapping[tuple[int, int], float]],
    path: str,
    *,
    title: str = "MQAR accuracy",
) -> None:
    """Grouped bar chart of accuracy per (L, N) slice for each model, saved as PNG."""
    from memarch.eval.plots import subplots

    slices = sorted({s for r in results.values() for s in r})
    x = np.arange(len(slices))
    width = 0.8 / max(len(results), 1)
    fig, ax = subplots(1.6 * len(slices) + 3, 4)
    for i, (name, r) in enumerate(results.items()):
        ax.bar(x + i * width, [r.get(s, np.nan) for s in slices], width, label=name)
    ax.set_xticks(x + width * (len(results) - 1) / 2)
    ax.set_xticklabels([f"L={l}\nN={n}" for l, n in slices])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
