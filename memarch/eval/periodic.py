"""The evaluation ``memarch train`` runs every ``eval_every`` steps and at the end of training.

The trainer does not know the tasks: :func:`memarch.train.trainer.train` takes an
``evaluate(model, step) -> metrics`` callable, and :func:`periodic_evaluation` makes the one of
a :class:`~memarch.train.config.TrainConfig` from its data section:

* a recall task (MQAR, needle, …): ``{"accuracy": {(a, b): acc}}`` on every slice of
  ``data.eval_slices`` (:func:`memarch.eval.recall.evaluate_slices`);
* ``"text"``: ``{"loss", "accuracy", "tokens"}`` on the held-out rows
  (:func:`memarch.eval.text.evaluate_text`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import nnx

from memarch.eval.recall import evaluate_slices
from memarch.eval.text import evaluate_text
from memarch.train.config import TrainConfig


def evaluate_config(model: nnx.Module, cfg: TrainConfig) -> dict[str, Any]:
    """The evaluation ``cfg.data`` asks for (see the module docstring), without the step."""
    if cfg.data.task == "text":
        return evaluate_text(model, cfg.data)
    return {"accuracy": evaluate_slices(model, cfg.data)}


def periodic_evaluation(cfg: TrainConfig) -> Callable[[nnx.Module, int], dict[str, Any]]:
    """``evaluate(model, step) -> metrics`` for :func:`memarch.train.trainer.train`: the
    :func:`evaluate_config` of ``cfg`` (the same at every step)."""

    def evaluate(model: nnx.Module, step: int) -> dict[str, Any]:
        return evaluate_config(model, cfg)

    return evaluate


__all__ = ["evaluate_config", "periodic_evaluation"]
