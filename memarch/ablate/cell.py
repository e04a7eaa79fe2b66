"""One cell of an ablation grid: train its config, derive its metrics, save them atomically.

A cell directory holds ``run/`` (the ``memarch train`` workdir: config, metrics, parameters)
and, once the cell is finished, ``result.json``. The result is written to a temporary file
and renamed, so it exists only complete: its presence is what makes a grid resumable.

Metrics of a cell (flat, numeric): ``acc/L{L}_N{N}`` per evaluation slice and ``acc_mean``
(MQAR / needle), ``lm_loss`` and ``lm_accuracy`` (held-out text), ``train_loss`` (the last
logged training loss), ``wall_time_s`` (the whole cell: data set-up, compilation, training and
evaluation), ``train_loop_s`` (the training loop alone, as ``memarch train`` reports), ``params``
(parameter count), ``num_layers`` and ``attn_share`` (the fraction of layers that are the
config's attention mixer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from memarch.ablate.grid import Cell
from memarch.eval.periodic import evaluate_config, periodic_evaluation
from memarch.train.config import TrainConfig
from memarch.train.setup import build_model
from memarch.train.trainer import train

RESULT = "result.json"


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain JSON data (tuples become lists), for saving and comparing."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), sort_keys=True))


def fingerprint(cfg: TrainConfig) -> str:
    """A hash of everything that determines training (not the run name; the layer stack by
    its resolved mixer names, so ``ratio=0`` with any linear mixer is one model)."""
    model = dataclasses.replace(
        cfg.model,
        pattern=tuple(cfg.model.layer_names()),
        num_layers=None,
        ratio=None,
        linear_mixer="",
        attention_mixer="",
        placement="",
    )
    data = config_dict(dataclasses.replace(cfg, name="", model=model))
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()


def attention_share(cfg: TrainConfig) -> float:
    """Fraction of layers whose mixer is ``model.attention_mixer`` (softmax attention)."""
    names = cfg.model.layer_names()
    return sum(n == cfg.model.attention_mixer for n in names) / len(names)


def param_count(cfg: TrainConfig) -> int:
    """Number of trainable parameters (from shapes only; nothing is allocated)."""
    params = nnx.state(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def eval_metrics(result: dict) -> dict[str, float]:
    """Flat metrics of one :func:`memarch.eval.periodic.evaluate_config` result (or a
    ``TrainResult.evals`` entry)."""
    acc = result["accuracy"]
    if isinstance(acc, dict):  # MQAR / needle: per (L, N) slice
        out = {f"acc/L{l}_N{n}": float(a) for (l, n), a in acc.items()}
        out["acc_mean"] = float(np.mean(list(acc.values())))
        return out
    return {"lm_loss": float(result["loss"]), "lm_accuracy": float(acc)}


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes JSON to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_result(cell_dir: Path) -> dict | None:
    """The saved result of a finished cell, or None."""
    path = Path(cell_dir) / RESULT
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def make_result(cell: Cell, cfg: TrainConfig, metrics: dict, extra: dict) -> dict:
    return {
        "cell": cell.name,
        "labels": dict(cell.labels),
        "overrides": list(cell.overrides),
        "config": config_dict(cfg),
        "fingerprint": fingerprint(cfg),
        "layers": cfg.model.layer_names(),
        "metrics": metrics,
        **extra,
    }


def use_compile_cache(directory: str | Path) -> None:
    """Caches compiled XLA programs in ``directory`` (JAX's persistent compilation cache), so
    cells that differ only in seed or learning rate compile once; a cache the user configured
    already is kept."""
    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_cell(
    cell: Cell,
    cfg: TrainConfig,
    cell_dir: str | Path,
    *,
    train_fn: Callable | None = None,
) -> dict:
    """Trains one cell (resuming from a checkpoint in ``cell_dir/run`` if one of the same
    config is there), evaluates it and writes ``cell_dir/result.json``; returns the result (at
    once, without training, if ``result.json`` of the same config appeared meanwhile).
    ``train_fn`` (default :func:`memarch.train.trainer.train`) is called with the trainer's
    keywords, ``evaluate=periodic_evaluation(cfg)`` among them."""
    train_fn = train_fn or train
    cell_dir = Path(cell_dir)
    done = read_result(cell_dir)
    if done is not None and done.get("config") == config_dict(cfg):
        return done  # finished meanwhile by another runner on the same folder
    cell_dir.mkdir(parents=True, exist_ok=True)
    run_dir = cell_dir / "run"
    saved = run_dir / "config.json"
    if saved.is_file() and json.loads(saved.read_text()) != config_dict(cfg):
        shutil.rmtree(run_dir)  # a leftover of another config: never resume from it
    start = time.perf_counter()
    res = train_fn(
        cfg,
        workdir=run_dir,
        progress=False,
        resume="auto",  # a fresh cell has no checkpoint yet
        log=lambda m: None,
        evaluate=periodic_evaluation(cfg),
    )
    if res.preempted:
        raise InterruptedError(f"{cell.name}: pre-empted at step {res.final_step}")
    final = res.evals[-1] if res.evals else evaluate_config(res.model, cfg)
    metrics = eval_metrics(final)
    if res.history:
        metrics["train_loss"] = float(res.history[-1]["loss"])
    metrics.update(
        wall_time_s=time.perf_counter() - start,
        train_loop_s=float(res.wall_time),
        params=param_count(cfg),
        num_layers=len(cfg.model.layer_names()),
        attn_share=attention_share(cfg),
    )
    result = make_result(
        cell,
        cfg,
        metrics,
        {"final_step": int(res.final_step), "resumed_from": res.resumed_from},
    )
    write_json_atomic(cell_dir / RESULT, result)
    return result


__all__ = [
    "RESULT",
    "attention_share",
    "config_dict",
    "eval_metrics",
    "fingerprint",
    "make_result",
    "param_count",
    "read_result",
    "run_cell",
    "use_compile_cache",
    "write_json_atomic",
]
