"""What a training run may do with its run directory, decided before anything is written.

:func:`plan_run` looks at the work directory (``config.json``, ``checkpoints/``,
``params/``, ``metrics.jsonl``) and the requested ``TrainConfig`` and returns a
:class:`RunPlan`, or raises ``ValueError``, before any file is created or changed:

* **a fresh run** (``resume=False``) into a directory that already holds a run is refused,
  or, with ``new_run=True``, goes to a new subdirectory ``<workdir>/run-<n>``;
* **a resume** (``resume=True``) needs a checkpoint (``resume="auto"``: start fresh when
  there is none) and compares the saved resolved config with the requested one,
  key by dotted key (:func:`config_changes`):

  - *structure* (``model.…``, ``data.vocab_size``, ``data.tokenizer``): the checkpoint is a
    different model (or its ids mean other tokens), so the resume is an error listing each key
    with both values — except ``model.remat`` (activation checkpointing: the same parameters,
    computed another way), which is allowed;
  - *schedule* (``num_steps``, ``optim.learning_rate``, ``optim.warmup_steps``,
    ``optim.schedule``, ``optim.end_lr_ratio``): the learning rate at a step changes, which
    needs ``allow_schedule_change=True`` — unless the newest checkpoint is step 0 (a
    converted checkpoint's start state: no step ran under the saved schedule);
  - anything else (logging, evaluation, checkpoint cadence, mesh, …) is allowed and listed.

The work directory may be a local folder or an object-store URL (``gs://bucket/run``,
:func:`memarch.train.workdir.as_path`); an unsupported ``scheme://`` is refused here, before
anything is written.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from etils import epath

from memarch.train.checkpoint import checkpoint_steps
from memarch.train.config import TrainConfig, config_to_json
from memarch.train.metrics import METRICS_FILE
from memarch.train.run_dir import CHECKPOINTS_DIR, CONFIG_FILE, PARAMS_DIR
from memarch.train.workdir import PathLike, as_path

STRUCTURE_KEYS = ("data.vocab_size", "data.tokenizer")  # the state's layout, or what ids mean
MODEL_RUNTIME_KEYS = ("model.remat",)  # model fields that change how it runs, not its parameters
SCHEDULE_KEYS = (
    "num_steps",
    "optim.learning_rate",
    "optim.warmup_steps",
    "optim.schedule",
    "optim.end_lr_ratio",
)
RESUME_MODES = (False, True, "auto")


@dataclasses.dataclass(frozen=True)
class ConfigChange:
    """One dotted key whose value differs between the saved and the requested config."""

    key: str
    saved: Any
    requested: Any

    @property
    def kind(self) -> str:
        """``"structure"`` | ``"schedule"`` | ``"allowed"`` (module docstring)."""
        if self.key in MODEL_RUNTIME_KEYS:
            return "allowed"
        if self.key == "model" or self.key.startswith("model.") or self.key in STRUCTURE_KEYS:
            return "structure"
        if self.key in SCHEDULE_KEYS:
            return "schedule"
        return "allowed"

    def __str__(self) -> str:
        return f"{self.key}: saved {self.saved!r}, requested {self.requested!r}"


_MISSING = "<absent>"


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = value
    return out


def config_changes(saved: dict, requested: dict) -> list[ConfigChange]:
    """The dotted keys (``model.d_model``, ``model.mixers.gla.chunk_size``) whose values differ
    between two JSON config dicts, sorted by key; a key present on one side only has the value
    ``"<absent>"`` on the other."""
    a, b = _flatten(saved, "", {}), _flatten(requested, "", {})
    return [
        ConfigChange(k, a.get(k, _MISSING), b.get(k, _MISSING))
        for k in sorted(set(a) | set(b))
        if a.get(k, _MISSING) != b.get(k, _MISSING)
    ]


def check_resume_config(
    saved: dict, cfg: TrainConfig, *, allow_schedule_change: bool, where: str
) -> list[str]:
    """Log lines listing the allowed (and acknowledged schedule) changes of ``cfg`` against
    the ``saved`` config dict of run ``where``; ``ValueError`` for a structure change, or a
    schedule change without ``allow_schedule_change``."""
    changes = config_changes(saved, json.loads(config_to_json(cfg)))
    structure = [c for c in changes if c.kind == "structure"]
    if structure:
        listed = "; ".join(str(c) for c in structure)
        raise ValueError(
            f"cannot resume {where}: the requested model differs from the saved one "
            f"(run {where}/{CONFIG_FILE}): {listed}\n"
            "train a new model in another --workdir (or with --new-run)"
        )
    schedule = [c for c in changes if c.kind == "schedule"]
    if schedule and not allow_schedule_change:
        listed = "; ".join(str(c) for c in schedule)
        raise ValueError(
            f"resuming {where} would change the learning-rate schedule: {listed}\n"
            "pass --allow-schedule-change (train(..., allow_schedule_change=True)) to accept it"
        )
    return [f"resume changes {c.kind} setting {c}" for c in changes]


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Where a run writes and whether it restores a checkpoint."""

    run_dir: epath.Path | None  # the run directory (a new subdirectory with new_run), or None
    checkpoint_dir: epath.Path | None  # checkpoint.directory or run_dir/checkpoints
    resume: bool  # restore the newest checkpoint that verifies from checkpoint_dir
    messages: tuple[str, ...]  # what was decided, for the log


def holds_run(run_dir: epath.Path) -> list[str]:
    """The entries of ``run_dir`` that show a run lives there (empty: free to use)."""
    names = (CONFIG_FILE, PARAMS_DIR, METRICS_FILE)
    found = [n for n in names if (run_dir / n).exists()]
    if checkpoint_steps(run_dir / CHECKPOINTS_DIR):
        found.append(CHECKPOINTS_DIR)
    return found


def _new_subdirectory(run_dir: epath.Path) -> epath.Path:
    n = 2
    while (run_dir / f"run-{n}").exists():
        n += 1
    return run_dir / f"run-{n}"


def plan_run(
    cfg: TrainConfig,
    workdir: PathLike | None,
    *,
    resume: bool | str = False,
    new_run: bool = False,
    allow_schedule_change: bool = False,
) -> RunPlan:
    """Decides, reading only, what ``train`` does with ``workdir`` (module docstring);
    ``ValueError`` naming the directory, the reason and the flag that would change it."""
    if not (resume is True or resume is False or resume == "auto"):
        raise ValueError(f"resume must be one of {list(RESUME_MODES)}; got {resume!r}")
    if resume and new_run:
        raise ValueError("--resume and --new-run exclude each other; choose one")
    run_dir = as_path(workdir) if workdir is not None else None
    explicit = as_path(cfg.checkpoint.directory) if cfg.checkpoint.directory else None
    if resume and run_dir is None and explicit is None:
        raise ValueError("resume needs a workdir (or checkpoint.directory) to resume from")
    messages: list[str] = []

    def ckpt_dir(run: epath.Path | None) -> epath.Path | None:
        return explicit or (run / CHECKPOINTS_DIR if run is not None else None)

    checkpoints = ckpt_dir(run_dir)
    steps = checkpoint_steps(checkpoints) if checkpoints is not None else []
    if not resume:
        existing = holds_run(run_dir) if run_dir is not None else []
        if explicit is not None and steps:
            existing.append(f"checkpoint.directory {str(explicit)!r}")
        if existing and not new_run:
            raise ValueError(
                f"{str(run_dir or explicit)!r} already holds a run ({', '.join(existing)}); "
                "continue it with --resume, or start a fresh run in a new subdirectory "
                "with --new-run"
            )
        if existing:
            if explicit is not None and steps:
                raise ValueError(
                    f"--new-run cannot share checkpoint.directory {str(explicit)!r}, which "
                    "holds checkpoints; set another checkpoint.directory"
                )
            run_dir = _new_subdirectory(run_dir)
            messages.append(
                f"{cfg.name}: {str(run_dir.parent)!r} holds a run; new run in {run_dir}"
            )
        return RunPlan(run_dir, ckpt_dir(run_dir), False, tuple(messages))
    if not steps:
        where = str(checkpoints)
        if resume != "auto":
            raise ValueError(
                f"--resume: no checkpoint in {where!r} to resume from (mistyped --workdir?); "
                "use --resume=auto to start a fresh run when there is none"
            )
        messages.append(f"{cfg.name}: no checkpoint in {where}; starting a fresh run")
        return RunPlan(run_dir, checkpoints, False, tuple(messages))
    saved_file = run_dir / CONFIG_FILE if run_dir is not None else None
    if saved_file is not None and saved_file.is_file():
        try:
            saved = json.loads(saved_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{saved_file}: not valid JSON ({err}); cannot compare configs"
            ) from err
        messages += [
            f"{cfg.name}: {line}"
            for line in check_resume_config(
                saved,
                cfg,
                # from checkpoint 0 (e.g. an imported model) no step ran on the old schedule
                allow_schedule_change=allow_schedule_change or max(steps) == 0,
                where=str(run_dir),
            )
        ]
    return RunPlan(run_dir, checkpoints, True, tuple(messages))


__all__ = [
    "ConfigChange",
    "METRICS_FILE",
    "RESUME_MODES",
    "RunPlan",
    "SCHEDULE_KEYS",
    "STRUCTURE_KEYS",
    "check_resume_config",
    "config_changes",
    "holds_run",
    "plan_run",
]
