"""The training loop: build model and optimiser, run jit-compiled steps over grain batches,
log, evaluate, and (with a run directory) save the resolved config, metrics and parameters.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from memarch.data.pipeline import train_dataset
from memarch.eval.mqar import evaluate_mqar
from memarch.models.lm import LM
from memarch.train.config import TrainConfig, config_to_json
from memarch.train.optimizer import make_optimizer
from memarch.train.step import make_train_step


@dataclasses.dataclass
class TrainResult:
    model: LM  # the trained model
    history: list[dict[str, float]]  # logged training metrics (step, loss, accuracy, …)
    evals: list[dict]  # {"step": s, "accuracy": {(L, N): acc}} for each evaluation
    wall_time: float  # seconds spent in the loop (compilation included)


def build_model(cfg: TrainConfig) -> LM:
    if cfg.model.vocab_size < cfg.data.vocab_size:
        raise ValueError(
            f"model.vocab_size ({cfg.model.vocab_size}) must be >= data.vocab_size "
            f"({cfg.data.vocab_size})"
        )
    return LM(cfg.model, rngs=nnx.Rngs(cfg.seed))


def train(
    cfg: TrainConfig, *, workdir: str | Path | None = None, progress: bool = False, log=print
) -> TrainResult:
    """Trains ``cfg`` for ``cfg.num_steps`` steps; returns the model and its metrics."""
    if cfg.num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {cfg.num_steps}")
    model = build_model(cfg)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg.optim, cfg.num_steps), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    step_fn = make_train_step(graphdef)
    data = train_dataset(cfg.data, cfg.batch_size)
    run_dir = None
    if workdir is not None:
        run_dir = Path(workdir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config_to_json(cfg))

    history, evals = [], []
    steps = range(cfg.num_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=cfg.name, leave=False)
    start = time.perf_counter()
    pending = []
    for step in steps:
        batch = {k: np.asarray(v) for k, v in data[step].items()}
        state, metrics = step_fn(state, batch)
        pending.append(metrics)
        last = step + 1 == cfg.num_steps
        if cfg.log_every and ((step + 1) % cfg.log_every == 0 or last):
            mean = {k: float(np.mean([jax.device_get(m[k]) for m in pending])) for k in pending[0]}
            if not np.isfinite(mean["loss"]):
                raise FloatingPointError(f"{cfg.name}: loss is {mean['loss']} at step {step + 1}")
            history.append({"step": step + 1, **mean})
            pending = []
        if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
            nnx.update((model, optimizer), state)
            evals.append({"step": step + 1, "accuracy": evaluate_mqar(model, cfg.data)})
    nnx.update((model, optimizer), state)
    wall = time.perf_counter() - start
    if run_dir is not None:
        save_params(model, run_dir / "params")
        with open(run_dir / "metrics.jsonl", "w") as f:
            for row in history:
                f.write(json.dumps(row) + "\n")
    return TrainResult(model=model, history=history, evals=evals, wall_time=wall)


def save_params(model: nnx.Module, path: Path) -> None:
    """Saves the model's parameters with orbax (atomic: written to a temp dir, then renamed)."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, nnx.state(model, nnx.Param), force=True)


def load_params(model: nnx.Module, path: Path) -> nnx.Module:
    """Restores parameters saved by :func:`save_params` into ``model`` (same config)."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if not path.exists():
        raise ValueError(f"no saved parameters at {str(path)!r}")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.state(model, nnx.Param)
    )
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(path, abstract)
    nnx.update(model, restored)
    return model
