"""Recall evaluation on any registered task: accuracy per slice, chance and oracle rows, and
saved runs (``memarch eval --checkpoint DIR --task NAME``).

The metric of every task (:mod:`memarch.data.tasks`) is the one of MQAR: the mean of
``prediction == target`` over the labelled positions of a slice's test examples (pooled; every
example of a slice has the same number of labels, so this is also the mean over examples of
the per-example accuracy). A model's prediction is its argmax
(:func:`memarch.eval.mqar.evaluate_mqar`); the **oracle** row scores the task's brute-force
answers and must read 1.0; the **chance** row is ``1 / |candidate answers|``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memarch.data.config import DataConfig
from memarch.data.pipeline import eval_batches
from memarch.data.source import IGNORE_INDEX
from memarch.data.tasks import get_task, slice_config
from memarch.eval.mqar import evaluate_mqar

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
    return evaluate_mqar(model, data, checked, batch_size=batch_size)


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


def _to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_tuples(v) for k, v in value.items()}
    return value


def config_from_dict(cls: type, values: Mapping[str, Any], where: str = "config") -> Any:
    """Rebuilds a (nested) config dataclass from ``dataclasses.asdict`` output loaded from
    JSON (lists become tuples); unknown keys raise ``ValueError``, missing ones keep their
    defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} for {cls.__name__}")
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            kwargs[name] = config_from_dict(tp, value, f"{where}.{name}")
        else:
            kwargs[name] = _to_tuples(value)
    return cls(**kwargs)


def load_run_config(run_dir: str | Path) -> Any:
    """The resolved ``TrainConfig`` a ``memarch train`` run saved in ``run_dir/config.json``."""
    from memarch.train.config import TrainConfig

    config_file = Path(run_dir) / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"checkpoint {str(run_dir)!r} must be a `memarch train` run directory with "
            "config.json (and params/ or checkpoints/)"
        )
    return config_from_dict(TrainConfig, json.loads(config_file.read_text()), str(config_file))


def load_run_params(model: Any, cfg: Any, run_dir: str | Path) -> Any:
    """``model`` (built from ``cfg``) with the parameters of run ``run_dir``: ``params/`` (the
    end of training) or, if the run stopped early, the newest checkpoint in ``checkpoints/``."""
    from memarch.train.trainer import load_params

    run = Path(run_dir)
    if (run / "params").is_dir():
        return load_params(model, run / "params")
    return _load_latest_checkpoint(cfg, model, run / "checkpoints")


def load_run(run_dir: str | Path) -> tuple[Any, Any]:
    """``(TrainConfig, model)`` of a ``memarch train`` run directory (see
    :func:`load_run_config` and :func:`load_run_params`)."""
    from memarch.train.trainer import build_model

    cfg = load_run_config(run_dir)
    return cfg, load_run_params(build_model(cfg), cfg, run_dir)


def _load_latest_checkpoint(cfg: Any, model: Any, directory: Path) -> Any:
    """``model`` with the parameters of the newest train-state checkpoint in ``directory``."""
    import jax
    from flax import nnx

    from memarch.train.checkpoint import Checkpointer, abstract_like
    from memarch.train.optimizer import make_optimizer
    from memarch.train.step import init_state

    if not directory.is_dir():
        raise ValueError(f"no params/ and no checkpoints/ in {str(directory.parent)!r}")
    ckpt = Checkpointer(directory, dataclasses.replace(cfg.checkpoint, async_save=False))
    try:
        step = ckpt.latest_step()
        if step is None:
            raise ValueError(f"no complete checkpoint in {str(directory)!r}")
        tx = make_optimizer(cfg.optim, cfg.num_steps)
        abstract = jax.eval_shape(lambda: init_state(model, tx, cfg.seed))
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
        state, _ = ckpt.restore(step, abstract_like(abstract, shardings))
    finally:
        ckpt.close()
    nnx.update(model, state["params"])
    return model


__all__ = [
    "accuracy",
    "baselines",
    "config_from_dict",
    "evaluate_task",
    "load_run",
    "load_run_config",
    "load_run_params",
    "recall_table",
    "task_data",
]
