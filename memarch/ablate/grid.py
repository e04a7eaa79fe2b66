"""Ablation grids: axes of config overrides, their cartesian product, and validation.

An **axis** is a name and a list of **values**; each value has a label (a table/plot entry)
and the ``key.sub=value`` overrides it applies (:func:`memarch.train.config.apply_overrides`).

- ``--grid model.ratio=7,3,1`` on the command line gives the axis ``model.ratio`` with labels
  ``7``, ``3``, ``1`` (values parsed as Python literals, else kept as strings; a value holding
  a comma is written as a literal: ``--grid "model.pattern='gla,attention','gla,gla'"``).
- The axis ``seed`` sets both ``seed`` (model initialisation) and ``data.seed`` (training
  data), as :func:`memarch.train.config.variant` does.
- A grid file is a Python module defining ``GRID``: ``{axis: [v1, v2, ...]}`` (as on the
  command line) or ``{axis: {label: {key: value, ...}, ...}}`` — a *bundle* axis whose values
  each set several keys, e.g. ``{"task": {"mqar": {"data.task": "mqar"}, "text": {...}}}``.

The grid is the cartesian product of its axes, in axis order (the last axis varies fastest).
:func:`resolve_cells` applies every cell's overrides to the base config and validates it
(:func:`memarch.train.validation.validate`) and builds each distinct model abstractly
(:func:`memarch.train.validation.validate_model`), so a bad key, value, pattern, slice or mixer
option of any cell is a ``ValueError`` naming the cell before any cell is trained.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax

from memarch.errors import ConfigError, ConfigFileError, line_in_file
from memarch.train.config import TrainConfig, apply_overrides
from memarch.train.validation import validate, validate_model

SEED_AXIS = "seed"
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_MAX_NAME = 120


@dataclasses.dataclass(frozen=True)
class AxisValue:
    label: str  # how the value appears in tables, plots and cell names
    overrides: tuple[str, ...]  # key.sub=value strings it applies


@dataclasses.dataclass(frozen=True)
class Axis:
    name: str  # a config key (``model.ratio``) or a free name for a bundle axis (``task``)
    values: tuple[AxisValue, ...]


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str  # deterministic directory name: axis=label pairs joined by "__"
    labels: dict[str, str]  # axis name -> label
    overrides: tuple[str, ...]  # all overrides of the cell, in axis order


def _override(key: str, value: Any) -> str:
    return f"{key}={value!r}"


def _value_overrides(key: str, value: Any) -> tuple[str, ...]:
    if key == SEED_AXIS:
        return (_override("seed", value), _override("data.seed", value))
    return (_override(key, value),)


def _label(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _split_values(text: str) -> list[Any]:
    """``"7,3,1"`` -> ``[7, 3, 1]``; ``"GGGA,GGAA"`` -> ``["GGGA", "GGAA"]``; literals with
    commas (tuples, quoted strings) stay whole."""
    try:
        parsed = ast.literal_eval(f"[{text}]")
        if isinstance(parsed, list):
            return parsed
    except (ValueError, SyntaxError):
        pass
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            out.append(ast.literal_eval(item))
        except (ValueError, SyntaxError):
            out.append(item)
    return out


def axis_from_values(name: str, values: Sequence[Any] | Mapping[str, Any]) -> Axis:
    """An axis from a list of values of the config key ``name``, or from a bundle
    ``{label: {key: value, ...}}`` (then ``name`` is free)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"grid axis names must be non-empty strings; got {name!r}")
    if isinstance(values, Mapping):
        out = []
        for label, bundle in values.items():
            if not isinstance(bundle, Mapping) or not bundle:
                raise ValueError(
                    f"grid axis {name!r}: value {label!r} must be a non-empty dict "
                    f"{{config key: value}}; got {bundle!r}"
                )
            ovr = tuple(o for k, v in bundle.items() for o in _value_overrides(k, v))
            out.append(AxisValue(str(label), ovr))
    elif isinstance(values, (list, tuple)):
        out = [AxisValue(_label(v), _value_overrides(name, v)) for v in values]
    else:
        raise ValueError(
            f"grid axis {name!r}: give a list of values or a dict {{label: {{key: value}}}}; "
            f"got {type(values).__name__}"
        )
    if not out:
        raise ValueError(f"grid axis {name!r} has no values")
    labels = [v.label for v in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"grid axis {name!r} repeats a value: {labels}")
    return Axis(name, tuple(out))


def parse_grid_args(items: Sequence[str]) -> list[Axis]:
    """Axes from ``--grid key=v1,v2`` strings."""
    axes = []
    for item in items:
        if "=" not in item:
            raise ValueError(f"--grid {item!r} must look like key.sub=v1,v2,...")
        key, text = (s.strip() for s in item.split("=", 1))
        if not text:
            raise ValueError(f"--grid {item!r} has no values; give key.sub=v1,v2,...")
        axes.append(axis_from_values(key, _split_values(text)))
    return axes


def load_grid_file(path: str | Path) -> list[Axis]:
    """Axes from a Python file defining ``GRID`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"grid file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"memarch_grid_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the file's own code raised: name its file and line
        raise ConfigFileError(path, line_in_file(err, path), err) from err
    grid = getattr(module, "GRID", None)
    if not isinstance(grid, Mapping):
        raise ValueError(f"grid file {str(path)!r} must define GRID = {{axis: values}}")
    return [axis_from_values(name, values) for name, values in grid.items()]


def _cell_name(labels: dict[str, str]) -> str:
    raw = "__".join(f"{a}={l}" for a, l in labels.items())
    name = _SAFE.sub("_", raw)
    if name != raw or len(name) > _MAX_NAME:  # keep names distinct after sanitising
        digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_NAME - 9]}-{digest}"
    return name


def cells(axes: Sequence[Axis]) -> list[Cell]:
    """The cartesian product of ``axes`` (last axis fastest); raises on an empty grid."""
    if not axes:
        raise ValueError(
            "the grid is empty: give at least one --grid key=v1,v2 or a --grid-file defining GRID"
        )
    names = [a.name for a in axes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"grid axes repeated: {dup}")
    out = []
    for combo in itertools.product(*(a.values for a in axes)):
        labels = {a.name: v.label for a, v in zip(axes, combo, strict=True)}
        ovr = tuple(o for v in combo for o in v.overrides)
        out.append(Cell(_cell_name(labels), labels, ovr))
    return out


def resolve_cells(
    base: TrainConfig, axes: Sequence[Axis], *, num_devices: int | None = None
) -> list[tuple[Cell, TrainConfig]]:
    """Every cell with its resolved config (run name = cell name), validated; any bad key,
    value or config raises ``ValueError`` naming the cell before anything is trained."""
    if num_devices is None:
        num_devices = jax.device_count()
    out = []
    built: set[tuple[str, int]] = set()  # (model config, data vocabulary) built already
    for cell in cells(axes):
        try:
            cfg = apply_overrides(base, list(cell.overrides))
            cfg = dataclasses.replace(cfg, name=cell.name)
            validate(cfg, num_devices)
            key = (repr(cfg.model), cfg.data.vocab_size)
            if key not in built:
                validate_model(cfg)
                built.add(key)
        except ValueError as err:
            raise ConfigError(f"grid cell {cell.name}: {err}") from None
        out.append((cell, cfg))
    return out


__all__ = [
    "SEED_AXIS",
    "Axis",
    "AxisValue",
    "Cell",
    "axis_from_values",
    "cells",
    "load_grid_file",
    "parse_grid_args",
    "resolve_cells",
]
