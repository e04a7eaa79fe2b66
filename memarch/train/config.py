"""Typed experiment configs and ``key.sub=value`` overrides.

``TrainConfig`` gathers the model (:class:`LMConfig`), the data (:class:`DataConfig`), the
optimiser (:class:`OptimConfig`), the device mesh and sharding rules (:class:`MeshConfig`),
multi-host start-up (:class:`DistributedConfig`) and checkpointing (:class:`CheckpointConfig`).
:func:`validate` checks a config against the device count before anything is compiled.

A config file is a Python module in ``configs/`` with ``get_config() -> TrainConfig``.
Overrides from the command line are applied with :func:`apply_overrides`; an unknown key or a
value of the wrong type is rejected with the closest valid key named. Mixer options are set
per mixer name or per layer index (``model.mixers.gla.chunk_size=32``,
``model.layers.3.window=128``); :class:`LMConfig` checks them (names, types, layer range).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import inspect
import json
import typing
from pathlib import Path
from typing import Any

from memarch.data.config import DataConfig
from memarch.errors import ConfigFileError, UserError, line_in_file
from memarch.models.lm import LMConfig
from memarch.registry import matches_type


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 1e-3  # peak learning rate
    schedule: str = "cosine"  # cosine (warmup then cosine decay) | constant (after warmup)
    warmup_steps: int = 100  # linear warmup from 0
    end_lr_ratio: float = 0.0  # final lr / peak lr for the cosine schedule
    weight_decay: float = 0.1  # AdamW decoupled weight decay (matrices only)
    b1: float = 0.9  # Adam β1
    b2: float = 0.98  # Adam β2
    grad_clip: float = 1.0  # global-norm gradient clipping; 0 disables


# logical axis -> mesh axes (None = replicated); see memarch.train.mesh
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),  # the batch is split over every data-parallel axis
    ("embed", "fsdp"),  # the residual width of weights: ZeRO-3 style parameter sharding
    ("vocab", "tensor"),  # embedding rows / head columns
    ("heads", "tensor"),  # attention and memory heads (q, k, v, gates, o_proj input)
    ("mlp", "tensor"),  # SwiGLU hidden units
    ("experts", None),  # MoM memories
    ("conv", None),  # short-conv taps
)

# parameter path glob -> logical name of each dimension; first match of the right rank wins.
# Paths look like "blocks/3/mixer/q_proj/kernel"; a pattern also matches any path ending in it.
DEFAULT_PARAM_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    ("embed/embedding", ("vocab", "embed")),
    ("head/kernel", ("embed", "vocab")),
    ("*mlp/down/kernel", ("mlp", "embed")),
    ("*mlp/*/kernel", ("embed", "mlp")),
    ("*o_proj/kernel", ("heads", "embed")),
    ("*conv/weight", ("conv", "heads")),
    ("*router", ("embed", "experts")),
    ("*", ("embed", "heads")),  # every other matrix: an input projection [D, H·d]
    ("*", ("experts", "embed", "heads")),  # stacked per-memory projections [M, D, H·d]
)

MESH_AXES = ("data", "fsdp", "tensor")
COMPUTE_DTYPES = ("float32", "bfloat16")
ON_NONFINITE = ("stop", "skip")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # data-parallel axis size (params replicated); -1 = the devices left over
    fsdp: int = 1  # fully-sharded data-parallel axis (batch and params split); -1 = the rest
    tensor: int = 1  # tensor-parallel axis (heads, MLP, vocab split); -1 = the rest
    rules: tuple[tuple[str, str | tuple[str, ...] | None], ...] = DEFAULT_RULES  # logical->mesh
    param_axes: tuple[tuple[str, tuple[str | None, ...]], ...] = DEFAULT_PARAM_AXES  # path->names


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    initialize: bool = False  # call jax.distributed.initialize before any device is touched
    coordinator_address: str = ""  # "host:port" of process 0; "" = auto-detect (TPU, SLURM)
    num_processes: int = 0  # processes in the job; 0 = auto-detect
    process_id: int = -1  # index of this process; -1 = auto-detect


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 0  # save every n steps (0 = only at the end and on SIGTERM); needs a workdir
    keep: int = 3  # keep the last n checkpoints
    async_save: bool = True  # write in a background thread while training continues
    directory: str = ""  # "" = <workdir>/checkpoints


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
    # a jax.profiler trace of steps [start_step, start_step + num_steps) is written to
    # <workdir>/profile/ (open with `tensorboard --logdir <workdir>/profile`, Profile tab)
    start_step: int = 1  # the first traced step (0-based; 1 skips the compiling first step)
    num_steps: int = 0  # how many steps to trace; 0 = no profile


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    name: str = "run"  # run name (tables, plots, run directory)
    model: LMConfig = dataclasses.field(default_factory=LMConfig)  # the language model
    data: DataConfig = dataclasses.field(default_factory=DataConfig)  # the task
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)  # the optimiser
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)  # device mesh and sharding
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)  # hosts
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)  # orbax
    profile: ProfileConfig = dataclasses.field(default_factory=ProfileConfig)  # jax.profiler
    batch_size: int = 64  # sequences per step (global, over all devices and hosts)
    grad_accum_steps: int = 1  # micro-batches per step (batch_size / this each)
    compute_dtype: str = "float32"  # float32 | bfloat16 (master weights stay float32)
    on_nonfinite: str = "stop"  # NaN/inf loss, gradient or update: stop (last good ckpt) | skip
    max_consecutive_skips: int = 10  # on_nonfinite=skip: stop with an error after n in a row
    num_steps: int = 2000  # optimiser steps
    eval_every: int = 0  # evaluate every n steps (0 = only at the end)
    log_every: int = 100  # log training metrics every n steps
    tensorboard: bool = True  # also write TensorBoard event files (tensorboardX) to the workdir
    peak_tflops: float = 0.0  # peak TFLOP/s of one device, for the MFU estimate (0 = no MFU)
    seed: int = 0  # parameter-initialisation seed


def variant(
    cfg: TrainConfig,
    *,
    name: str | None = None,
    pattern: str | None = None,
    seed: int | None = None,
    learning_rate: float | None = None,
) -> TrainConfig:
    """A copy of ``cfg`` for one cell of a sweep: another run name, layer pattern, seed (model
    initialisation and training data together) and/or peak learning rate."""
    out = cfg
    if name is not None:
        out = dataclasses.replace(out, name=name)
    if pattern is not None:
        out = dataclasses.replace(out, model=dataclasses.replace(out.model, pattern=pattern))
    if seed is not None:
        out = dataclasses.replace(out, seed=seed, data=dataclasses.replace(out.data, seed=seed))
    if learning_rate is not None:
        out = dataclasses.replace(
            out, optim=dataclasses.replace(out.optim, learning_rate=learning_rate)
        )
    return out


def _def_line(func: Any) -> int | None:
    """The line of ``def func`` in its file (None for callables without code)."""
    code = getattr(func, "__code__", None)
    return None if code is None else code.co_firstlineno


def load_config(path: str | Path, *, tiny: bool = False) -> TrainConfig:
    """Imports a config file and returns its ``get_config()``.

    ``tiny=True`` asks for the file's tiny CPU variant, ``get_config(tiny=True)``; files whose
    ``get_config`` takes no ``tiny`` argument are CPU-sized already and are returned as is.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"memarch_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the file's own code raised: name its file and line
        raise ConfigFileError(path, line_in_file(err, path), err) from err
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UserError(f"config file {str(path)!r} must define get_config()")
    takes_tiny = "tiny" in inspect.signature(get_config).parameters
    try:
        cfg = get_config(tiny=True) if tiny and takes_tiny else get_config()
    except Exception as err:  # e.g. a bad field value, or a get_config with a wrong signature
        line = line_in_file(err, path) or _def_line(get_config)
        raise ConfigFileError(path, line, err) from err
    if not isinstance(cfg, TrainConfig):
        raise ConfigFileError(
            path,
            _def_line(get_config),
            TypeError(f"get_config() must return a TrainConfig; got {type(cfg)}"),
        )
    return cfg


def _field_paths(cfg: Any, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out.append(prefix + f.name)
        if dataclasses.is_dataclass(value):
            out += _field_paths(value, prefix + f.name + ".")
    return out


def _parse(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as model.pattern=LLLA


def _to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value


def _set(cfg: Any, path: list[str], value: Any, full: str, root: Any) -> Any:
    hints = typing.get_type_hints(type(cfg))
    name = path[0]
    names = [f.name for f in dataclasses.fields(cfg)]
    if name not in names:
        close = difflib.get_close_matches(full, _field_paths(root), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown config key {full!r}{hint}")
    current = getattr(cfg, name)
    if len(path) > 1:
        if isinstance(
            current, dict
        ):  # e.g. model.mixers.<name>.<option>, model.layers.<i>.<option>
            key = path[1]
            if key not in current and key.isdigit() and int(key) in current:
                key = int(key)  # model.layers.3 addresses the entry of layer index 3
            new = dict(current)
            new[key] = _set_in_dict(current.get(key, {}), path[2:], value, full)
            return dataclasses.replace(cfg, **{name: new})
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"config key {full!r}: {name!r} is a value, not a section")
        return dataclasses.replace(cfg, **{name: _set(current, path[1:], value, full, root)})
    value = _to_tuples(value)
    if not matches_type(value, hints[name]):
        raise ValueError(
            f"config key {full!r} expects {hints[name]}; got {value!r} ({type(value).__name__})"
        )
    if hints[name] is float and isinstance(value, int):
        value = float(value)
    return dataclasses.replace(cfg, **{name: value})


def _set_in_dict(d: Any, path: list[str], value: Any, full: str) -> Any:
    if not path:
        return _to_tuples(value)
    if dataclasses.is_dataclass(d):  # typed options: the owner re-checks the edited fields
        d = {f.name: getattr(d, f.name) for f in dataclasses.fields(d) if f.init}
    if not isinstance(d, dict):
        raise ValueError(f"config key {full!r}: cannot index into {d!r}")
    new = dict(d)
    new[path[0]] = _set_in_dict(d.get(path[0], {}), path[1:], value, full)
    return new


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Applies ``key.sub=value`` strings (values parsed as Python literals, else strings)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, text = item.split("=", 1)
        cfg = _set(cfg, key.strip().split("."), _parse(text.strip()), key.strip(), cfg)
    return cfg


def config_to_json(cfg: Any) -> str:
    """The resolved config as JSON (saved beside every run)."""
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)


__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "DistributedConfig",
    "MeshConfig",
    "OptimConfig",
    "ProfileConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_json",
    "load_config",
]
