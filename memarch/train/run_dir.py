"""Saving and loading a run directory of ``memarch train``.

A run directory holds::

    config.json     the resolved TrainConfig (config_to_json)
    params/         the parameters at the end of training (orbax, written atomically)
    checkpoints/    train-state checkpoints (memarch.train.checkpoint), newest first used
    metrics.jsonl, tensorboard/   the metric writers' files (memarch.train.metrics)

:func:`load_run` rebuilds the config and the model from ``config.json`` and the newest
checkpoint that verifies (:func:`restore_run_params`: a named step, or ``params/`` when the
run has no checkpoints), and says which it used.

A run directory may be a local folder or an object-store URL (``gs://bucket/run``): every path
here is an ``etils.epath.Path`` made by :func:`memarch.train.workdir.as_path`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from memarch.train.checkpoint import Checkpointer, abstract_like, checkpoint_steps
from memarch.train.config import TrainConfig, config_to_json
from memarch.train.setup import build_model, make_setup
from memarch.train.workdir import PathLike, as_path, write_file

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
CHECKPOINTS_DIR = "checkpoints"


def write_run_config(run_dir: PathLike, cfg: TrainConfig) -> epath.Path:
    """Creates ``run_dir`` and writes the resolved ``cfg`` to ``run_dir/config.json``."""
    return write_file(run_dir, CONFIG_FILE, config_to_json(cfg))


def save_params(model: nnx.Module, path: PathLike) -> None:
    """Saves the model's parameters with orbax (atomic: written to a temp dir, then renamed;
    on ``gs://`` completed by a commit marker)."""
    path = as_path(path)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, nnx.state(model, nnx.Param), force=True)


def load_params(model: nnx.Module, path: PathLike) -> nnx.Module:
    """Restores parameters saved by :func:`save_params` into ``model`` (any mesh: the
    parameters land with ``model``'s current shardings)."""
    path = as_path(path)
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


def load_run_config(run_dir: PathLike) -> TrainConfig:
    """The resolved ``TrainConfig`` a ``memarch train`` run saved in ``run_dir/config.json``."""
    config_file = as_path(run_dir) / CONFIG_FILE
    if not config_file.is_file():
        raise ValueError(
            f"checkpoint {str(run_dir)!r} must be a `memarch train` run directory with "
            "config.json (and params/ or checkpoints/)"
        )
    values = upgrade_saved_config(json.loads(config_file.read_text()))
    return config_from_dict(TrainConfig, values, str(config_file))


def upgrade_saved_config(values: dict[str, Any]) -> dict[str, Any]:
    """A ``config.json`` written by an earlier memarch, in today's keys: ``model.mixer_options``
    (untyped, per mixer name) became ``model.mixers`` (the same mapping, now typed)."""
    model = values.get("model")
    if isinstance(model, dict) and "mixer_options" in model:
        model = dict(model)
        legacy = model.pop("mixer_options") or {}
        if model.get("mixers"):
            raise ValueError("config.json has both model.mixer_options and model.mixers")
        model["mixers"] = legacy
        values = dict(values, model=model)
    return values


def run_checkpoint_dir(cfg: TrainConfig, run_dir: PathLike) -> epath.Path:
    """Where run ``run_dir`` of ``cfg`` keeps its checkpoints (``checkpoint.directory`` or
    ``run_dir/checkpoints``)."""
    if cfg.checkpoint.directory:
        return as_path(cfg.checkpoint.directory)
    return as_path(run_dir) / CHECKPOINTS_DIR


def restore_run_params(
    model: nnx.Module, cfg: TrainConfig, run_dir: PathLike, *, step: int | None = None
) -> tuple[nnx.Module, str]:
    """``(model, source)``: ``model`` with the parameters of run ``run_dir`` (saved with
    ``cfg``, its own config, which fixes the train-state layout) and a phrase saying where
    they came from.

    ``step`` names a checkpoint, which must verify; otherwise the newest checkpoint that
    verifies is used (its ``params`` equal ``params/`` at the end of training, and it is newer
    than ``params/`` after a resumed run stopped early); ``params/`` only when the run has no
    checkpoints. Checkpoints are opened read-only. ``ValueError`` (a
    :class:`~memarch.train.checkpoint.CheckpointError` for a bad checkpoint) otherwise."""
    run = as_path(run_dir)
    directory = run_checkpoint_dir(cfg, run)
    steps = checkpoint_steps(directory)
    if step is not None and step not in steps:
        raise ValueError(
            f"--step {step}: no checkpoint {step} in {str(directory)!r}; saved: {steps}"
        )
    if not steps:
        if (run / PARAMS_DIR).is_dir():
            return load_params(model, run / PARAMS_DIR), f"{run / PARAMS_DIR} (end of training)"
        raise ValueError(f"no params/ and no checkpoints in {str(run)!r}")
    ckpt = Checkpointer(directory, cfg.checkpoint, read_only=True)
    try:
        abstract = make_setup(cfg).abstract_state()
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
        if step is not None:
            state, _ = ckpt.restore(step, target)
            source = f"checkpoint {step} in {directory}"
        else:
            found = ckpt.restore_newest(target)
            state, step = found.state, found.step
            source = f"checkpoint {step} in {directory} (the newest that verifies)"
            if found.rejected:
                source += "; passed over " + "; ".join(str(e) for e in found.rejected)
    finally:
        ckpt.close()
    nnx.update(model, state["params"])
    return model, source


def load_run_params(model: nnx.Module, cfg: TrainConfig, run_dir: PathLike) -> nnx.Module:
    """``model`` with the parameters of run ``run_dir`` (:func:`restore_run_params`)."""
    return restore_run_params(model, cfg, run_dir)[0]


def load_run(run_dir: PathLike) -> tuple[TrainConfig, nnx.Module]:
    """``(TrainConfig, model)`` of a ``memarch train`` run directory (see
    :func:`load_run_config` and :func:`restore_run_params`)."""
    cfg = load_run_config(run_dir)
    return cfg, load_run_params(build_model(cfg), cfg, run_dir)


__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "PARAMS_DIR",
    "config_from_dict",
    "load_params",
    "load_run",
    "load_run_config",
    "load_run_params",
    "restore_run_params",
    "run_checkpoint_dir",
    "save_params",
    "write_run_config",
]
