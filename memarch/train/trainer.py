"""The training loop: validate, build the mesh and the sharded train state, run the compiled
step over grain batches, log, evaluate, checkpoint, and handle resume, SIGTERM and NaNs.

Order of work in :func:`train`:

1. ``jax.distributed.initialize`` (if configured), then :func:`validate` against the device
   count — config errors surface here, before anything is compiled;
2. the ``(data, fsdp, tensor)`` mesh and the shardings of every state leaf (logical-axis
   rules, :mod:`memarch.train.mesh`); the state is created by a jitted initialiser straight
   into those shardings (no full copy on one device), or restored from the latest checkpoint
   with ``resume=True``;
3. the step is compiled ahead of time (its FLOPs feed the MFU estimate), then called once
   per batch; metrics stay on the device until a log, checkpoint or eval boundary.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from memarch.data.pipeline import train_examples
from memarch.eval.mqar import evaluate_mqar
from memarch.models.lm import LM
from memarch.train.checkpoint import Checkpointer, abstract_like
from memarch.train.config import TrainConfig, config_to_json
from memarch.train.distributed import initialize
from memarch.train.input import BatchLoader
from memarch.train.mesh import batch_sharding, make_mesh, replicated, tree_shardings
from memarch.train.metrics import MetricWriter, compiled_flops, mfu
from memarch.train.optimizer import make_optimizer, make_schedule
from memarch.train.step import init_state, make_train_step
from memarch.train.validation import validate


@dataclasses.dataclass
class TrainResult:
    model: LM  # the trained model
    history: list[dict[str, float]]  # logged training metrics (step, loss, accuracy, …)
    evals: list[dict]  # {"step": s, "accuracy": {(L, N): acc}} for each evaluation
    wall_time: float  # seconds spent in the loop (compilation included)
    final_step: int = 0  # the step training stopped at (num_steps unless pre-empted)
    preempted: bool = False  # stopped early by SIGTERM (a checkpoint was saved)
    resumed_from: int | None = None  # the checkpoint step this run started from


def build_model(cfg: TrainConfig) -> LM:
    if cfg.model.vocab_size < cfg.data.vocab_size:
        raise ValueError(
            f"model.vocab_size ({cfg.model.vocab_size}) must be >= data.vocab_size "
            f"({cfg.data.vocab_size})"
        )
    return LM(cfg.model, rngs=nnx.Rngs(cfg.seed))


class _Preemption:
    """Turns SIGTERM into a flag checked between steps (main thread, one process), or asks
    JAX's coordination service whether all processes reached a pre-emption point (multi-host).
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._sync_point = jax.process_count() > 1  # False once the service proves absent

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def _handler(self, signum, frame):
        self.requested = True

    def check(self, step: int) -> bool:
        if self._sync_point:
            from jax.experimental import multihost_utils

            try:
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except Exception:  # no pre-emption service in this job: local flag only
                self._sync_point = False
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _mean_row(window: list[dict]) -> dict[str, float]:
    """Means over the steps of a log window (non-finite losses of skipped steps left out)."""
    keep = [m for m in window if not m.get("skipped", 0)] or window
    row = {}
    for k in window[0]:
        if k == "skipped":
            row[k] = float(sum(m[k] for m in window))
        else:
            row[k] = float(np.mean([m[k] for m in keep]))
    return row


def evaluate(model: LM, cfg: TrainConfig, step: int) -> dict:
    """The task's evaluation: ``{"step", "accuracy": {(L, N): acc}}`` for MQAR,
    ``{"step", "loss", "accuracy", "tokens"}`` on held-out text."""
    if cfg.data.task == "text":
        from memarch.eval.text import evaluate_text

        return {"step": step, **evaluate_text(model, cfg.data)}
    return {"step": step, "accuracy": evaluate_mqar(model, cfg.data)}


def eval_row(result: dict) -> dict:
    """One metrics row (``eval/…`` keys) of an :func:`evaluate` result."""
    row = {"step": result["step"]}
    for key, value in result.items():
        if isinstance(value, dict):
            row.update({f"eval/L{l}_N{n}": a for (l, n), a in value.items()})
        elif key != "step":
            row[f"eval/{key}"] = value
    return row


def train(
    cfg: TrainConfig,
    *,
    workdir: str | Path | None = None,
    progress: bool = False,
    resume: bool = False,
    log=print,
) -> TrainResult:
    """Trains ``cfg`` for ``cfg.num_steps`` steps; returns the model and its metrics.

    With ``workdir``: the resolved config (``config.json``), metrics (``metrics.jsonl``,
    ``tensorboard/``), orbax checkpoints (``checkpoints/``) and the final parameters
    (``params/``). ``resume=True`` continues from the latest checkpoint there (from scratch
    if there is none). SIGTERM saves a checkpoint and returns (``preempted=True``).
    """
    initialize(cfg.distributed)
    validate(cfg, jax.device_count())
    examples = train_examples(cfg.data)  # data-config errors, before compilation
    if resume and workdir is None and not cfg.checkpoint.directory:
        raise ValueError("resume needs a workdir (or checkpoint.directory) to resume from")

    mesh = make_mesh(cfg.mesh)
    tx = make_optimizer(cfg.optim, cfg.num_steps)
    schedule = make_schedule(cfg.optim, cfg.num_steps)
    graphdef = nnx.split(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)[0]

    def fresh_state():
        return init_state(build_model(cfg), tx, cfg.seed)

    abstract = jax.eval_shape(fresh_state)
    shardings = tree_shardings(cfg.mesh, mesh, abstract)
    loader = BatchLoader(examples, cfg.batch_size, batch_sharding(cfg.mesh, mesh))

    run_dir = Path(workdir) if workdir is not None else None
    is_main = jax.process_index() == 0
    if run_dir is not None and is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config_to_json(cfg))
    ckpt = None
    if cfg.checkpoint.directory or run_dir is not None:
        ckpt = Checkpointer(cfg.checkpoint.directory or run_dir / "checkpoints", cfg.checkpoint)

    state, start, resumed_from = None, 0, None
    if resume and ckpt is not None and ckpt.latest_step() is not None:
        resumed_from = ckpt.latest_step()
        state, meta = ckpt.restore(resumed_from, abstract_like(abstract, shardings))
        start = int(meta["data"]["next_step"])
        log(f"{cfg.name}: resumed from checkpoint {resumed_from} in {ckpt.directory}")
    if state is None:
        state = jax.jit(fresh_state, out_shardings=shardings)()

    step_fn = make_train_step(
        graphdef,
        tx,
        grad_accum_steps=cfg.grad_accum_steps,
        compute_dtype=cfg.compute_dtype,
        skip_nonfinite=cfg.on_nonfinite == "skip",
        state_shardings=shardings,
        batch_shardings=loader.sharding,
    )
    compiled = step_fn.lower(abstract_like(abstract, shardings), loader.abstract()).compile()
    flops = compiled_flops(compiled)
    seq_tokens = int(np.prod(loader.shapes["inputs"]))

    writer = MetricWriter(run_dir, tensorboard=cfg.tensorboard)
    history, evals = [], []
    pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet checked
    window: list[dict] = []  # host metrics since the last log
    last_saved = resumed_from
    preempted = False
    steps = range(start, cfg.num_steps)
    bar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.num_steps, initial=start, desc=cfg.name, leave=False)

    def model_of(params):
        if jax.process_count() > 1:  # eval on host-local copies of the parameters
            params = jax.jit(lambda p: p, out_shardings=replicated(mesh))(params)
        return nnx.merge(graphdef, params)

    def save(done):
        nonlocal last_saved
        meta = {
            "step": done,
            "config": dataclasses.asdict(cfg),
            "data": {"kind": "random_access", "next_step": done},
        }
        ckpt.save(done, state, meta)
        last_saved = done

    def check_pending():
        for s, m in jax.device_get(pending):
            if cfg.on_nonfinite == "stop" and not np.isfinite(m["loss"]):
                where = "no checkpoint saved yet"
                if ckpt is not None and last_saved is not None:
                    ckpt.wait()
                    where = f"last good checkpoint: step {last_saved} in {ckpt.directory}"
                raise FloatingPointError(
                    f"{cfg.name}: loss is {m['loss']} at step {s}; {where} "
                    "(set on_nonfinite=skip to skip such batches)"
                )
            window.append(m)
        pending.clear()

    start_time = time.perf_counter()
    window_start, window_excluded, window_steps = start_time, 0.0, 0
    done = start
    with _Preemption() as preemption:
        try:
            for step in steps:
                state, metrics = compiled(state, loader(step))
                done = step + 1
                pending.append((done, metrics))
                window_steps += 1
                if bar is not None:
                    bar.update(1)
                last = done == cfg.num_steps
                do_log = cfg.log_every and (done % cfg.log_every == 0 or last)
                do_ckpt = ckpt is not None and (
                    (cfg.checkpoint.every and done % cfg.checkpoint.every == 0) or last
                )
                do_eval = (cfg.eval_every and done % cfg.eval_every == 0) or last
                stop = preemption.check(done)
                if not (do_log or do_ckpt or do_eval or stop):
                    continue
                check_pending()
                if do_log:
                    now = time.perf_counter()
                    step_time = (now - window_start - window_excluded) / max(window_steps, 1)
                    row = {"step": done, **_mean_row(window)}
                    row.update(
                        lr=float(schedule(done - 1)),
                        step_time=step_time,
                        tokens_per_s=seq_tokens / step_time if step_time > 0 else 0.0,
                    )
                    if cfg.peak_tflops > 0:
                        row["mfu"] = mfu(flops, step_time, cfg.peak_tflops, 1)
                    history.append(row)
                    writer.write(row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4f}")
                    window.clear()
                    window_start, window_excluded, window_steps = now, 0.0, 0
                t0 = time.perf_counter()
                if do_ckpt or (stop and ckpt is not None):
                    save(done)
                if do_eval:
                    evals.append(evaluate(model_of(state["params"]), cfg, done))
                    writer.write(eval_row(evals[-1]))
                window_excluded += time.perf_counter() - t0
                if stop and not last:
                    preempted = True
                    where = f"checkpoint {done} saved" if ckpt is not None else "no workdir"
                    log(f"{cfg.name}: SIGTERM at step {done}; {where}; rerun with --resume")
                    break
        finally:
            if bar is not None:
                bar.close()
            loader.close()
            writer.close()
            if ckpt is not None:
                ckpt.close()

    model = nnx.merge(graphdef, state["params"])
    wall = time.perf_counter() - start_time
    if run_dir is not None and not preempted:
        save_params(model, run_dir / "params")
    return TrainResult(
        model=model,
        history=history,
        evals=evals,
        wall_time=wall,
        final_step=done,
        preempted=preempted,
        resumed_from=resumed_from,
    )


def save_params(model: nnx.Module, path: Path) -> None:
    """Saves the model's parameters with orbax (atomic: written to a temp dir, then renamed)."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, nnx.state(model, nnx.Param), force=True)


def load_params(model: nnx.Module, path: Path) -> nnx.Module:
    """Restores parameters saved by :func:`save_params` into ``model`` (any mesh: the
    parameters land with ``model``'s current shardings)."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if not path.exists():
        raise ValueError(f"no saved parameters at {str(path)!r}")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        nnx.state(model, nnx.Param),
    )
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(path, abstract)
    nnx.update(model, restored)
    return model
