"""Metric writers (JSONL and TensorBoard) and the model-FLOPs-utilisation estimate.

Only process 0 of a multi-host job writes. Each logged row is one JSON line in
``<workdir>/metrics.jsonl`` and, with tensorboardX installed and enabled, one scalar per key
in ``<workdir>/tensorboard/`` (``tensorboard --logdir <workdir>/tensorboard``).

The workdir may be an object-store URL (:mod:`memarch.train.workdir`). tensorboardX opens its
event file through a writer factory chosen by the URL prefix; :func:`use_epath_for_tensorboard`
registers one per URL scheme that writes through ``etils.epath`` (its own ``gs://`` writer needs
``google-cloud-storage`` and bypasses the path layer everything else uses), so events land in
the same bucket as the checkpoints, rewritten whole at each flush (object stores cannot append).
"""

from __future__ import annotations

import json
import math
from typing import Any

import jax

from memarch.train.workdir import (
    URL_SCHEMES,
    ObjectAppender,
    PathLike,
    as_path,
    is_url,
    open_append,
)

METRICS_FILE = "metrics.jsonl"  # the JSONL rows, in the workdir
TENSORBOARD_DIR = "tensorboard"  # the TensorBoard event files, in the workdir


class _EpathEventFiles:
    """A tensorboardX writer factory (``open``, ``directory_check``) for URL logdirs."""

    def open(self, path: str) -> ObjectAppender:
        return ObjectAppender(path)

    def directory_check(self, path: str) -> None:
        as_path(path).mkdir(parents=True, exist_ok=True)


def use_epath_for_tensorboard() -> None:
    """Makes tensorboardX write event files of every URL logdir (``gs://``, ``s3://``, …)
    through ``etils.epath`` (idempotent)."""
    from tensorboardX import record_writer  # lazy: optional and heavy

    factory = _EpathEventFiles()
    for scheme in URL_SCHEMES:
        if not isinstance(record_writer.REGISTERED_FACTORIES.get(scheme), _EpathEventFiles):
            record_writer.register_writer_factory(scheme, factory)


class MetricWriter:
    """Appends ``{"step": s, name: value, …}`` rows to JSONL and TensorBoard files."""

    def __init__(self, workdir: PathLike | None, *, tensorboard: bool = True):
        self.enabled = workdir is not None and jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        workdir = as_path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open_append(workdir / METRICS_FILE)
        if tensorboard:
            try:  # lazy: tensorboardX is optional and heavy, used only with tensorboard=True
                from tensorboardX import SummaryWriter
            except ImportError:  # optional: JSONL is always written
                SummaryWriter = None
            if SummaryWriter is not None:
                if is_url(workdir):
                    use_epath_for_tensorboard()
                self._tb = SummaryWriter(str(workdir / TENSORBOARD_DIR))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def compiled_flops(compiled) -> float:
    """FLOPs of one call of a compiled (AOT) function, from XLA's cost analysis (0 if absent).

    For an SPMD-partitioned program this is the work of *one* device (measured: a step
    sharded over 8 devices reports about 1/8 of the 1-device count, plus collectives'
    bookkeeping); it counts every HLO FLOP (forward, backward, optimiser)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return 0.0
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def mfu(flops_per_step: float, step_time: float, peak_tflops: float, num_devices: int = 1) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over ``peak_tflops · num_devices``
    (``num_devices = 1`` with the per-device FLOPs of :func:`compiled_flops`)."""
    if step_time <= 0 or peak_tflops <= 0:
        return 0.0
    return flops_per_step / step_time / (peak_tflops * 1e12 * num_devices)


__all__ = [
    "METRICS_FILE",
    "MetricWriter",
    "TENSORBOARD_DIR",
    "compiled_flops",
    "mfu",
    "use_epath_for_tensorboard",
]
