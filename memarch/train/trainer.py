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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from memarch.data.pipeline import train_examples
from memarch.models.lm import LM
from memarch.train.checkpoint import Checkpointer, abstract_like
from memarch.train.config import TrainConfig
from memarch.train.distributed import initialize
from memarch.train.input import BatchLoader
from memarch.train.mesh import batch_sharding, make_mesh, replicated, tree_shardings
from memarch.train.metrics import MetricWriter, compiled_flops, mfu
from memarch.train.run_dir import CHECKPOINTS_DIR, PARAMS_DIR, save_params, write_run_config
from memarch.train.setup import make_setup
from memarch.train.validation import validate

Evaluation = Callable[[LM, int], dict[str, Any]]
"""``evaluate(model, step) -> metrics``: values are floats or ``{slice: float}`` maps (e.g.
``{"accuracy": {(L, N): acc}}`` for a recall task, ``{"loss", "accuracy", "tokens"}`` on text);
:mod:`memarch.eval.periodic` makes the one ``memarch train`` runs."""


@dataclasses.dataclass
class TrainResult:
    model: LM  # the trained model
    history: list[dict[str, float]]  # logged training metrics (step, loss, accuracy, …)
    evals: list[dict]  # {"step": s, **evaluate(model, s)} for each evaluation
    wall_time: float  # seconds spent in the loop (compilation included)
    final_step: int = 0  # the step training stopped at (num_steps unless pre-empted)
    preempted: bool = False  # stopped early by SIGTERM (a checkpoint was saved)
    resumed_from: int | None = None  # the checkpoint step this run started from


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


def eval_row(result: dict) -> dict:
    """One metrics row (``eval/…`` keys) of a ``TrainResult.evals`` entry: ``{"step": s,
    "accuracy": {(L, N): a}}`` becomes ``{"step": s, "eval/L{L}_N{N}": a}``, a float ``x`` under
    ``key`` becomes ``eval/key``."""
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
    log: Callable[[str], None] = print,
    evaluate: Evaluation | None = None,
) -> TrainResult:
    """Trains ``cfg`` for ``cfg.num_steps`` steps; returns the model and its metrics.

    ``evaluate(model, step)`` runs every ``cfg.eval_every`` steps and at the last step; its
    results, with ``"step"`` added, are ``TrainResult.evals`` and ``eval/…`` metric rows
    (``None``: no evaluation; ``memarch train`` passes
    :func:`memarch.eval.periodic.periodic_evaluation`).

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
    setup = make_setup(cfg)
    schedule, graphdef = setup.schedule, setup.graphdef
    abstract = setup.abstract_state()
    shardings = tree_shardings(cfg.mesh, mesh, abstract)
    loader = BatchLoader(examples, cfg.batch_size, batch_sharding(cfg.mesh, mesh))

    run_dir = Path(workdir) if workdir is not None else None
    is_main = jax.process_index() == 0
    if run_dir is not None and is_main:
        write_run_config(run_dir, cfg)
    ckpt = None
    if cfg.checkpoint.directory or run_dir is not None:
        ckpt = Checkpointer(cfg.checkpoint.directory or run_dir / CHECKPOINTS_DIR, cfg.checkpoint)

    state, start, resumed_from = None, 0, None
    if resume and ckpt is not None and ckpt.latest_step() is not None:
        resumed_from = ckpt.latest_step()
        state, meta = ckpt.restore(resumed_from, abstract_like(abstract, shardings))
        start = int(meta["data"]["next_step"])
        log(f"{cfg.name}: resumed from checkpoint {resumed_from} in {ckpt.directory}")
    if state is None:
        state = jax.jit(setup.fresh_state, out_shardings=shardings)()

    step_fn = setup.train_step(state_shardings=shardings, batch_shardings=loader.sharding)
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
                do_eval = evaluate is not None and (
                    (cfg.eval_every and done % cfg.eval_every == 0) or last
                )
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
                    evals.append({"step": done, **evaluate(model_of(state["params"]), done)})
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
        save_params(model, run_dir / PARAMS_DIR)
    return TrainResult(
        model=model,
        history=history,
        evals=evals,
        wall_time=wall,
        final_step=done,
        preempted=preempted,
        resumed_from=resumed_from,
    )


__all__ = ["Evaluation", "TrainResult", "eval_row", "train"]
