"""Saving and loading a run directory of ``memarch train``.

A run directory holds::

    config.json     the resolved TrainConfig (config_to_json)
    params/         the parameters at the end of training (orbax, written atomically)
    checkpoints/    train-state checkpoints (memarch.train.checkpoint), newest first used
    metrics.jsonl, tensorboard/   the metric writers' files (memarch.train.metrics)

:func:`load_run` rebuilds the config and the model from ``config.json`` and ``params/`` (or,
when the run stopped before its end, the newest checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from memarch.train.checkpoint import Checkpointer, abstract_like
from memarch.train.config import TrainConfig, config_to_json
from memarch.train.setup import build_model, make_setup

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
CHECKPOINTS_DIR = "checkpoints"


def write_run_config(run_dir: str | Path, cfg: TrainConfig) -> Path:
    """Creates ``run_dir`` and writes the resolved ``cfg`` to ``run_dir/config.json``."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    path = run / CONFIG_FILE
    path.write_text(config_to_json(cfg))
    return path


def save_params(model: nnx.Module, path: str | Path) -> None:
    """Saves the model's parameters with orbax (atomic: written to a temp dir, then renamed)."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, nnx.state(model, nnx.Param), force=True)


def load_params(model: nnx.Module, path: str | Path) -> nnx.Module:
    """Restores parameters saved by :func:`save_params` into ``model`` (any mesh: the
    parameters land with ``model``'s current shardings)."""
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


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved ``TrainConfig`` a ``memarch train`` run saved in ``run_dir/config.json``."""
    config_file = Path(run_dir) / CONFIG_FILE
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


def load_run_params(model: nnx.Module, cfg: TrainConfig, run_dir: str | Path) -> nnx.Module:
    """``model`` (built from ``cfg``) with the parameters of run ``run_dir``: ``params/`` (the
    end of training) or, if the run stopped early, the newest checkpoint in ``checkpoints/``."""
    run = Path(run_dir)
    if (run / PARAMS_DIR).is_dir():
        return load_params(model, run / PARAMS_DIR)
    return _load_latest_checkpoint(cfg, model, run / CHECKPOINTS_DIR)


def load_run(run_dir: str | Path) -> tuple[TrainConfig, nnx.Module]:
    """``(TrainConfig, model)`` of a ``memarch train`` run directory (see
    :func:`load_run_config` and :func:`load_run_params`)."""
    cfg = load_run_config(run_dir)
    return cfg, load_run_params(build_model(cfg), cfg, run_dir)


def _load_latest_checkpoint(cfg: TrainConfig, model: nnx.Module, directory: Path) -> nnx.Module:
    """``model`` with the parameters of the newest train-state checkpoint in ``directory``
    (restored onto the first device; the state layout is the trainer's, from
    :func:`memarch.train.setup.make_setup`)."""
    if not directory.is_dir():
        raise ValueError(f"no params/ and no checkpoints/ in {str(directory.parent)!r}")
    ckpt = Checkpointer(directory, dataclasses.replace(cfg.checkpoint, async_save=False))
    try:
        step = ckpt.latest_step()
        if step is None:
            raise ValueError(f"no complete checkpoint in {str(directory)!r}")
        abstract = make_setup(cfg).abstract_state()
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
        state, _ = ckpt.restore(step, abstract_like(abstract, shardings))
    finally:
        ckpt.close()
    nnx.update(model, state["params"])
    return model


__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "PARAMS_DIR",
    "config_from_dict",
    "load_params",
    "load_run",
    "load_run_config",
    "load_run_params",
    "save_params",
    "write_run_config",
]
