"""The pieces every training loop is built from: the model, the optimiser and schedule, the
fresh train state and the compiled step of a :class:`~memarch.train.config.TrainConfig`.

:func:`memarch.train.trainer.train`, :func:`memarch.train.continual.train_fact_stream` and
:func:`memarch.train.run_dir.load_run_params` (restoring a checkpoint) all start here, so the
optimiser, state layout and step options of a config are decided in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

from memarch.models.lm import LM
from memarch.train.config import TrainConfig
from memarch.train.mesh import compute_shardings
from memarch.train.optimizer import make_optimizer, make_schedule
from memarch.train.step import init_state, make_train_step


def build_model(cfg: TrainConfig) -> LM:
    """``LM(cfg.model)`` initialised from ``cfg.seed``; ``model.vocab_size`` must cover the
    data's vocabulary (``ValueError`` naming both fields otherwise)."""
    if cfg.model.vocab_size < cfg.data.vocab_size:
        raise ValueError(
            f"model.vocab_size ({cfg.model.vocab_size}) must be >= data.vocab_size "
            f"({cfg.data.vocab_size})"
        )
    return LM(cfg.model, rngs=nnx.Rngs(cfg.seed))


def predicted_vocab(cfg: TrainConfig) -> int | None:
    """The ids the loss may predict: for task ``text`` with an embedding padded past the
    tokenizer (``model.vocab_size > data.vocab_size``), ``data.vocab_size``; else None (all)."""
    if cfg.data.task == "text" and cfg.model.vocab_size > cfg.data.vocab_size:
        return cfg.data.vocab_size
    return None


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """Optimiser, schedule and model graph of ``cfg`` for a run of ``num_steps`` steps.

    ``graphdef`` is the model's graph with its ``nnx.Param`` leaves split off (taken from
    abstract shapes: nothing is allocated); the train state is the dict pytree of
    :func:`memarch.train.step.init_state`.
    """

    cfg: TrainConfig
    num_steps: int  # the length of the optimiser's schedule
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    graphdef: Any

    def fresh_state(self) -> dict:
        """A newly initialised train state (run under ``jax.jit`` to create it sharded)."""
        return init_state(build_model(self.cfg), self.tx, self.cfg.seed)

    def abstract_state(self) -> Any:
        """``jax.ShapeDtypeStruct`` leaves of :meth:`fresh_state` (nothing allocated)."""
        return jax.eval_shape(self.fresh_state)

    def train_step(self, *, state_shardings: Any = None, batch_shardings: Any = None) -> Callable:
        """The jitted ``step(state, batch) -> (state, metrics)`` with the config's gradient
        accumulation, compute dtype and non-finite policy (see
        :func:`memarch.train.step.make_train_step`); with ``state_shardings``, the weights are
        gathered over the data-parallel axes for the forward and backward pass
        (:func:`memarch.train.mesh.compute_shardings`)."""
        return make_train_step(
            self.graphdef,
            self.tx,
            grad_accum_steps=self.cfg.grad_accum_steps,
            compute_dtype=self.cfg.compute_dtype,
            skip_nonfinite=self.cfg.on_nonfinite == "skip",
            state_shardings=state_shardings,
            batch_shardings=batch_shardings,
            num_classes=predicted_vocab(self.cfg),
            param_compute_shardings=(
                None
                if state_shardings is None
                else compute_shardings(self.cfg.mesh, state_shardings["params"])
            ),
        )


def make_setup(cfg: TrainConfig, num_steps: int | None = None) -> TrainSetup:
    """The :class:`TrainSetup` of ``cfg``; the schedule spans ``num_steps`` (default
    ``cfg.num_steps``)."""
    steps = cfg.num_steps if num_steps is None else num_steps
    tx = make_optimizer(cfg.optim, steps)
    schedule = make_schedule(cfg.optim, steps)
    graphdef = nnx.split(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)[0]
    return TrainSetup(cfg=cfg, num_steps=steps, tx=tx, schedule=schedule, graphdef=graphdef)


__all__ = ["TrainSetup", "build_model", "make_setup", "predicted_vocab"]
