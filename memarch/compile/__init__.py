"""Ahead-of-time compilation for TPU topologies (``memarch compile``): the training, evaluation
and decode steps of a config compiled for e.g. ``v5e:16x16`` on a CPU host, with per-chip
memory against HBM, FLOPs, an MFU bound, collectives and XLA's sharding warnings."""

from memarch.compile.aot import STEPS, CompileReport, StepReport, batch_spec, compile_config
from memarch.compile.report import MemoryFitError, check_fits, write_report
from memarch.compile.topology import CHIPS, Chip, TopologyError, parse_topology, topology_devices

__all__ = [
    "CHIPS",
    "STEPS",
    "Chip",
    "CompileReport",
    "MemoryFitError",
    "StepReport",
    "TopologyError",
    "batch_spec",
    "check_fits",
    "compile_config",
    "parse_topology",
    "topology_devices",
    "write_report",
]
