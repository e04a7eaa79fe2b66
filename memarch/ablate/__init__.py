"""Ablation grids: ``memarch ablate`` trains the cartesian product of config overrides
(resumable, in sequence or in parallel processes) and reports CSV, Markdown and PNG plots."""

from memarch.ablate.grid import (
    Axis,
    AxisValue,
    Cell,
    axis_from_values,
    cells,
    load_grid_file,
    parse_grid_args,
    resolve_cells,
)
from memarch.ablate.report import write_report
from memarch.ablate.runner import GridRun, run_grid

__all__ = [
    "Axis",
    "AxisValue",
    "Cell",
    "GridRun",
    "axis_from_values",
    "cells",
    "load_grid_file",
    "parse_grid_args",
    "resolve_cells",
    "run_grid",
    "write_report",
]
