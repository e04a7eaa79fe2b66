"""The training loop: validate, build the mesh and the sharded train state, run the compiled
step over grain batches, log, evaluate, checkpoint, and handle resume, SIGTERM and NaNs.

Order of work in :func:`train`:

1. ``jax.distributed.initialize`` (if configured), then :func:`validate` against the device
   count — config errors surface here, before anything is compiled;
2. the ``(data, fsdp, tensor)`` mesh and the shardings of every state leaf (logical-axis
   rules, :mod:`memarch.train.mesh`); the state is created by a jitted initialiser straight
   into those shardings (no full copy on one device), or restored from the newest checkpoint
   that verifies with ``resume=True`` (:mod:`memarch.train.checkpoint`); what the run may do
   with its directory is decided first, reading only (:mod:`memarch.train.resume`);
3. the step is compiled ahead of time (its FLOPs feed the MFU estimate), then called once
   per batch; metrics stay on the device until a log, checkpoint or eval boundary, where
   every step since the last boundary is checked finite before anything is saved.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from memarch.data.pipeline import train_examples
from memarch.errors import ConfigError
from memarch.models.lm import LM
from memarch.train.checkpoint import Checkpointer, abstract_like
from memarch.train.config import TrainConfig
from memarch.train.distributed import initialize
from memarch.train.input import BatchLoader
from memarch.train.mesh import batch_sharding, make_mesh, replicated, tree_shardings
from memarch.train.metrics import MetricWriter, compiled_flops, mfu
from memarch.train.profile import StepProfiler
from memarch.train.resume import plan_run
from memarch.train.run_dir import PARAMS_DIR, save_params, write_run_config
from memarch.train.setup import make_setup
from memarch.train.validation import validate
from memarch.train.workdir import PathLike

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
    preempted: bool = False  # stopped early by SIGTERM/SIGINT (a checkpoint was saved)
    resumed_from: int | None = None  # the checkpoint step this run started from
    skipped_steps: int = 0  # steps skipped as non-finite (on_nonfinite=skip)
    run_dir: epath.Path | None = None  # the run directory written (a new subdirectory with new_run)


class _Preemption:
    """Turns SIGTERM and SIGINT (Ctrl-C) into a flag checked between steps (main thread, one
    process), or asks JAX's coordination service whether all processes reached a pre-emption
    point (multi-host). A second Ctrl-C raises ``KeyboardInterrupt`` at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.signal_name = "pre-emption"  # which signal asked to stop
        self._previous = {}
        self._sync_point = jax.process_count() > 1  # False once the service proves absent

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def check(self, step: int) -> bool:
        if self._sync_point:
            try:
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except Exception:  # no pre-emption service in this job: local flag only
                self._sync_point = False
        return self.requested

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)


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
    workdir: PathLike | None = None,
    progress: bool = False,
    resume: bool | str = False,
    new_run: bool = False,
    allow_schedule_change: bool = False,
    log: Callable[[str], None] = print,
    evaluate: Evaluation | None = None,
) -> TrainResult:
    """Trains ``cfg`` for ``cfg.num_steps`` steps; returns the model and its metrics.

    ``evaluate(model, step)`` runs every ``cfg.eval_every`` steps and at the last step; its
    results, with ``"step"`` added, are ``TrainResult.evals`` and ``eval/…`` metric rows
    (``None``: no evaluation; ``memarch train`` passes
    :func:`memarch.eval.periodic.periodic_evaluation`).

    With ``workdir``: the resolved config (``config.json``), metrics (``metrics.jsonl``,
    ``tensorboard/``), verified orbax checkpoints (``checkpoints/``) and the final
    parameters (``params/``); with ``cfg.profile.num_steps``, a ``jax.profiler`` trace
    (``profile/``, :mod:`memarch.train.profile`). ``workdir`` may be a local folder or an
    object-store URL such as ``gs://bucket/run`` (:mod:`memarch.train.workdir`).
    A ``workdir`` that already holds a run is refused unless
    ``resume`` is set, or ``new_run=True`` trains into a new subdirectory of it
    (``TrainResult.run_dir``). ``resume=True`` continues from the newest checkpoint there
    that verifies (naming the newer ones it passed over; an error if there is none),
    ``resume="auto"`` starts fresh when there is no checkpoint; a resumed config may not
    change the model, and may change the learning-rate schedule only with
    ``allow_schedule_change=True`` (:mod:`memarch.train.resume`). All of this is decided
    before any file is written.

    Every step's loss, gradient norm and updated state are checked finite; with
    ``on_nonfinite="stop"`` the first non-finite step raises ``FloatingPointError`` naming
    it and the last verified checkpoint; with ``"skip"`` such steps leave the state unchanged,
    are counted (``TrainResult.skipped_steps``, ``skipped`` metric) and
    ``cfg.max_consecutive_skips`` of them in a row raise ``FloatingPointError``. SIGTERM and
    SIGINT save a checkpoint and return (``preempted=True``).
    """
    initialize(cfg.distributed)
    validate(cfg, jax.device_count())
    if cfg.profile.num_steps and workdir is None:
        raise ConfigError("profile.num_steps > 0 needs a workdir to write the trace into")
    examples = train_examples(cfg.data)  # data-config errors, before compilation
    plan = plan_run(
        cfg, workdir, resume=resume, new_run=new_run, allow_schedule_change=allow_schedule_change
    )  # reads only: refusals come before anything is written

    mesh = make_mesh(cfg.mesh)
    setup = make_setup(cfg)
    schedule, graphdef = setup.schedule, setup.graphdef
    abstract = setup.abstract_state()
    shardings = tree_shardings(cfg.mesh, mesh, abstract)
    loader = BatchLoader(
        examples,
        cfg.batch_size,
        batch_sharding(cfg.mesh, mesh),
        worker_count=cfg.data.worker_count,
        num_steps=cfg.num_steps,
    )

    run_dir = plan.run_dir
    is_main = jax.process_index() == 0
    for message in plan.messages:
        log(message)
    ckpt = None
    if plan.checkpoint_dir is not None:
        ckpt = Checkpointer(plan.checkpoint_dir, cfg.checkpoint, log=log)

    state, start, resumed_from = None, 0, None
    if plan.resume:
        found = ckpt.restore_newest(abstract_like(abstract, shardings))  # CheckpointError: none
        for rejected in found.rejected:
            aside = ckpt.set_aside(rejected.step)
            log(f"{cfg.name}: {rejected}; set aside as {aside.name}")
        if found.rejected and jax.process_count() > 1:
            multihost_utils.sync_global_devices("memarch: rejected checkpoints set aside")
        state, resumed_from = found.state, found.step
        start = int(found.meta["data"]["next_step"])
        newer = (
            f" (the newest that verifies; passed over {[e.step for e in found.rejected]})"
            if found.rejected
            else ""
        )
        log(f"{cfg.name}: resumed from checkpoint {resumed_from} in {ckpt.directory}{newer}")
    if state is None:
        state = jax.jit(setup.fresh_state, out_shardings=shardings)()
    if run_dir is not None and is_main:
        write_run_config(run_dir, cfg)

    step_fn = setup.train_step(state_shardings=shardings, batch_shardings=loader.sharding)
    compiled = step_fn.lower(abstract_like(abstract, shardings), loader.abstract()).compile()
    flops = compiled_flops(compiled)
    seq_tokens = int(np.prod(loader.shapes["inputs"]))

    writer = MetricWriter(run_dir, tensorboard=cfg.tensorboard)
    profiler = StepProfiler(cfg.profile, run_dir)
    history, evals = [], []
    pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet checked
    window: list[dict] = []  # host metrics since the last log
    preempted = False
    skips = {"total": 0, "run": 0}  # skipped steps: in all, and in a row up to the last check
    steps = range(start, cfg.num_steps)
    bar = None
    if progress and is_main:
        bar = tqdm(total=cfg.num_steps, initial=start, desc=cfg.name, leave=False)

    def model_of(params):
        if jax.process_count() > 1:  # eval on host-local copies of the parameters
            params = jax.jit(lambda p: p, out_shardings=replicated(mesh))(params)
        return nnx.merge(graphdef, params)

    def save(done):
        meta = {
            "step": done,
            "config": dataclasses.asdict(cfg),
            "data": {"kind": "random_access", "next_step": done},
        }
        ckpt.save(done, state, meta)

    def last_good() -> str:
        if ckpt is None:
            return "no checkpoint (no workdir)"
        ckpt.wait()  # read back and verify the saves in flight
        good = ckpt.newest_verified()
        if good is None:
            return "no verified checkpoint yet"
        return f"last good checkpoint: step {good} in {ckpt.directory} (verified finite)"

    def check_pending():
        """Moves the pending steps' metrics to the host and checks each step was finite;
        runs before every save, so a checkpoint only ever holds a checked state."""
        for s, m in jax.device_get(pending):
            finite = bool(m.pop("finite"))
            if not finite:
                loss, norm = float(m["loss"]), float(m["grad_norm"])
                what = (
                    f"loss {loss}"
                    if not np.isfinite(loss)
                    else f"gradient norm {norm}"
                    if not np.isfinite(norm)
                    else "updated parameters or optimiser state (loss and gradient finite)"
                )
                raise FloatingPointError(
                    f"{cfg.name}: non-finite {what} at step {s}; {last_good()} "
                    "(set on_nonfinite=skip to skip such batches)"
                )
            if m["skipped"]:
                skips["total"] += 1
                skips["run"] += 1
                if skips["run"] >= cfg.max_consecutive_skips:
                    raise FloatingPointError(
                        f"{cfg.name}: {skips['run']} steps in a row skipped as non-finite, up "
                        f"to step {s} (max_consecutive_skips={cfg.max_consecutive_skips}); "
                        f"{last_good()} (lower optim.learning_rate or check the data)"
                    )
            else:
                skips["run"] = 0
            window.append(m)
        pending.clear()

    start_time = time.perf_counter()
    window_start, window_excluded, window_steps = start_time, 0.0, 0
    done = start
    with _Preemption() as preemption:
        try:
            for step in steps:
                profiler.before(step)
                state, metrics = compiled(state, loader(step))
                done = step + 1
                profiler.after(done, state)
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
                    log(
                        f"{cfg.name}: {preemption.signal_name} at step {done}; {where}; "
                        "rerun with --resume"
                    )
                    break
        finally:
            profiler.close()
            if bar is not None:
                bar.close()
            loader.close()
            writer.close()
            if ckpt is not None:
                ckpt.close()

    model = nnx.merge(graphdef, state["params"])
    wall = time.perf_counter() - start_time
    if skips["total"]:
        log(
            f"{cfg.name}: skipped {skips['total']} of {done - start} steps as non-finite "
            "(on_nonfinite=skip)"
        )
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
        skipped_steps=skips["total"],
        run_dir=run_dir,
    )


__all__ = ["Evaluation", "TrainResult", "eval_row", "train"]
