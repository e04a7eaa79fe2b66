"""Recall evaluation on any registered task: accuracy per slice, chance and oracle rows and
their table (``memarch eval --checkpoint DIR --task NAME``; saved runs are loaded with
:mod:`memarch.train.run_dir`).

The metric of every task (:mod:`memarch.data.tasks`) is the one of MQAR: the mean of
``prediction == target`` over the labelled positions of a slice's test examples (pooled; every
example of a slice has the same number of labels, so this is also the mean over examples of
the per-example accuracy). A model's prediction is its argmax (:func:`evaluate_slices`); the
**oracle** row scores the task's brute-force answers and must read 1.0; the **chance** row is
``1 / |candidate answers|``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch.data.config import DataConfig
from memarch.data.pipeline import eval_batches
from memarch.data.source import IGNORE_INDEX
from memarch.data.tasks import get_task, slice_config
from memarch.models.forward import forward

Slice = tuple[int, int]


def accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Mean of ``predictions == targets`` over the labelled positions
    (``targets != IGNORE_INDEX``) of ``[B, L]`` arrays."""
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions shape {predictions.shape} must equal targets shape {targets.shape}"
        )
    mask = targets != IGNORE_INDEX
    if not mask.any():
        raise ValueError("targets have no labelled positions (all IGNORE_INDEX)")
    return float(np.mean(predictions[mask] == targets[mask]))


def make_eval_step(graphdef: Any) -> Callable:
    """Returns the jitted ``step(model_state, batch) -> (correct [B, T] bool, mask [B, T]
    bool)``: ``correct = (argmax logits == targets) & mask``, ``mask = targets !=
    IGNORE_INDEX``."""

    @jax.jit
    def eval_step(state, batch):
        model = nnx.merge(graphdef, state)
        logits, _, _ = forward(model, batch)
        mask = batch["targets"] != IGNORE_INDEX
        return (jnp.argmax(logits, -1) == batch["targets"]) & mask, mask

    return eval_step


def evaluate_slices(
    model: nnx.Module,
    cfg: DataConfig,
    slices: Sequence[Slice] | None = None,
    *,
    batch_size: int = 64,
) -> dict[Slice, float]:
    """Accuracy of ``model`` on each slice ``(a, b)`` of task ``cfg.task`` (``slices``, default
    ``cfg.eval_slices``): ``Σ correct / Σ labelled`` over the slice's test batches
    (:func:`memarch.data.pipeline.eval_batches`; argmax == target). The slices are not
    validated here: :func:`evaluate_task` checks the task and slices first."""
    graphdef, state = nnx.split(model)
    step = make_eval_step(graphdef)
    out = {}
    for a, b in slices if slices is not None else cfg.eval_slices:
        correct = total = 0
        for batch in eval_batches(cfg, a, b, batch_size):
            ok, mask = step(state, batch)
            correct += int(np.asarray(ok).sum())
            total += int(np.asarray(mask).sum())
        out[(a, b)] = correct / max(total, 1)
    return out


def task_data(
    cfg: DataConfig, task: str, slices: Sequence[Slice] | None = None
) -> tuple[DataConfig, list[Slice]]:
    """``cfg`` switched to ``task`` and its slices (``slices`` or ``cfg.eval_slices``), every
    slice validated: a bad task or slice raises ``ValueError`` before any model work."""
    get_task(task)
    data = dataclasses.replace(cfg, task=task)
    out = [tuple(s) for s in (slices if slices is not None else data.eval_slices)]
    if not out:
        raise ValueError("data.eval_slices must list at least one slice to evaluate")
    for s in out:
        if len(s) != 2:
            raise ValueError(f"a slice must be a pair (a, b); got {s!r}")
        slice_config(data, *s)
    return data, out


def evaluate_task(
    model: Any,
    task: str,
    cfg: DataConfig,
    slices: Sequence[Slice] | None = None,
    *,
    batch_size: int = 64,
) -> dict[Slice, float]:
    """Accuracy (argmax == target over labelled positions) of ``model`` on each slice of
    ``task``, drawn from ``cfg``'s test stream (``eval_seed``, ``num_eval_examples``)."""
    data, checked = task_data(cfg, task, slices)
    return evaluate_slices(model, data, checked, batch_size=batch_size)


def baselines(
    task: str, cfg: DataConfig, slices: Sequence[Slice] | None = None, *, batch_size: int = 64
) -> dict[str, dict[Slice, float]]:
    """``{"chance": {slice: 1/|candidates|}, "oracle": {slice: acc}}``; the oracle's answers
    are computed from the test inputs by brute force and scored with :func:`accuracy` on the
    same batches a model sees (1.0 unless a generator is broken)."""
    data, checked = task_data(cfg, task, slices)
    spec = get_task(task)
    chance, oracle = {}, {}
    for s in checked:
        config = slice_config(data, *s)
        chance[s] = spec.chance(config)
        hits = total = 0
        for batch in eval_batches(data, *s, batch_size):
            mask = batch["targets"] != IGNORE_INDEX
            pred = spec.oracle(config, batch["inputs"], batch["targets"])
            hits += int(np.sum((pred == batch["targets"]) & mask))
            total += int(mask.sum())
        oracle[s] = hits / max(total, 1)
    return {"chance": chance, "oracle": oracle}


def recall_table(
    results: Mapping[str, Mapping[Slice, float]], slice_names: tuple[str, str] = ("L", "N")
) -> str:
    """Markdown: rows = models (and baselines), columns = slices ``a=…, b=…``, then the mean."""
    slices = sorted({s for r in results.values() for s in r})
    a, b = slice_names
    head = "| model | " + " | ".join(f"{a}={x}, {b}={y}" for x, y in slices) + " | mean |"
    rows = [head, "|---" * (len(slices) + 2) + "|"]
    for name, r in results.items():
        cells = [f"{r[s]:.3f}" if s in r else "—" for s in slices]
        mean = np.mean([r[s] for s in slices if s in r])
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {mean:.3f} |")
    return "\n".join(rows)


__all__ = [
    "accuracy",
    "baselines",
    "evaluate_slices",
    "evaluate_task",
    "make_eval_step",
    "recall_table",
    "task_data",
]
