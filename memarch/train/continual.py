"""Continual training on a fact stream: one model trained on tasks ``0 … T−1`` in turn.

Built from the trainer's set-up (:mod:`memarch.train.setup`): the same model, optimiser,
train state and compiled step as :func:`memarch.train.trainer.train`, with one optimiser
state and one schedule spanning all ``T · steps_per_task`` steps. Single device.

The caller's ``evaluate(model, step) -> accuracy [T]`` (one entry per task; e.g.
:func:`memarch.eval.forgetting.fact_accuracy`) runs at step 0, every ``eval_every`` steps and
at the end of every task; :mod:`memarch.eval.forgetting` turns the results into the accuracy
matrix and the continual-learning metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from memarch.data.fact_stream import FactStream
from memarch.models.lm import LM
from memarch.train.config import TrainConfig
from memarch.train.setup import make_setup
from memarch.train.validation import validate

TaskEvaluation = Callable[[LM, int], np.ndarray]  # (model, step) -> accuracy [T]


@dataclasses.dataclass
class ContinualRun:
    """What :func:`train_fact_stream` returns (``N`` evaluations, ``T`` tasks)."""

    model: LM  # the model after the last task
    accuracy: np.ndarray  # [N, T]: evaluate(model, steps[n]) for every evaluation n
    steps: np.ndarray  # [N]: training step of evaluation n (0 = at initialisation)
    task_ends: np.ndarray  # [T]: step at which training on task j ended
    losses: np.ndarray  # [T · steps_per_task]: training loss per step


def _check_eval_every(eval_every: int) -> None:
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every must be an int >= 1 (steps); got {eval_every!r}")


def train_fact_stream(
    cfg: TrainConfig,
    stream: FactStream,
    *,
    eval_every: int,
    evaluate: TaskEvaluation,
    log: Callable[[str], None] | None = None,
) -> ContinualRun:
    """Trains ``build_model(cfg)`` on tasks ``0 … T−1`` of ``stream`` in turn.

    From ``cfg`` the model, optimiser, batch size, seed, ``grad_accum_steps``,
    ``compute_dtype`` and ``on_nonfinite`` are used (``cfg.data`` and ``cfg.num_steps`` are
    not: each task runs ``stream.steps_per_task(batch_size)`` steps). Task ``t``'s step ``s``
    trains on ``stream.train_batch(t, s, batch_size)``. ``evaluate`` runs at step 0, every
    ``eval_every`` steps and at the end of every task. Config errors are raised (ValueError)
    before anything is built or compiled; ``on_nonfinite="stop"`` raises FloatingPointError
    at the first evaluation after a non-finite loss.
    """
    if not isinstance(stream, FactStream):
        raise ValueError(f"stream must be a FactStream; got {type(stream).__name__}")
    stream.config.validate()
    _check_eval_every(eval_every)
    sc = stream.config
    # the trainer's checks, with the stream's vocabulary standing in for the data section's
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, vocab_size=sc.vocab_size))
    validate(cfg, 1, data=False)  # cfg.data is not used: its slices are not checked
    per_task = stream.steps_per_task(cfg.batch_size)

    setup = make_setup(cfg, per_task * sc.num_tasks)
    state = setup.fresh_state()
    step_fn = setup.train_step()

    def model_of(params) -> LM:
        return nnx.merge(setup.graphdef, params)

    accuracy = [np.asarray(evaluate(model_of(state["params"]), 0), dtype=np.float64)]
    steps = [0]
    task_ends = np.zeros(sc.num_tasks, dtype=np.int64)
    losses: list[jax.Array] = []
    done = 0
    for task in range(sc.num_tasks):
        for s in range(per_task):
            batch = stream.train_batch(task, s, cfg.batch_size)
            state, metrics = step_fn(state, batch)
            losses.append(metrics["loss"])
            done += 1
            end = s == per_task - 1
            if done % eval_every and not end:
                continue
            if cfg.on_nonfinite == "stop":
                bad = [i for i, x in enumerate(jax.device_get(losses)) if not np.isfinite(x)]
                if bad:
                    raise FloatingPointError(
                        f"{cfg.name}: non-finite loss at step {bad[0] + 1} (task {task})"
                    )
            accuracy.append(np.asarray(evaluate(model_of(state["params"]), done), dtype=np.float64))
            steps.append(done)
        task_ends[task] = done
        if log is not None:
            log(
                f"{cfg.name}: task {task} done at step {done}; accuracy {np.round(accuracy[-1], 3)}"
            )
    return ContinualRun(
        model=model_of(state["params"]),
        accuracy=np.stack(accuracy),
        steps=np.asarray(steps),
        task_ends=task_ends,
        losses=np.asarray(jax.device_get(losses), dtype=np.float64),
    )


__all__ = ["ContinualRun", "TaskEvaluation", "train_fact_stream"]
