"""A ``jax.profiler`` trace of a window of training steps, written into the run directory.

With ``profile.num_steps = n > 0`` the trainer traces steps ``[start_step, start_step + n)``:
the trace starts before step ``start_step`` is dispatched and stops once the state of step
``start_step + n − 1`` is computed (``block_until_ready``), so the window holds exactly those
steps' device work. The trace lands in ``<workdir>/profile/plugins/profile/<run>/<host>.xplane.pb``
— the layout TensorBoard's Profile tab (the ``xprof`` plugin) reads:
``tensorboard --logdir <workdir>/profile``. For an object-store workdir the profiler writes to a
local temporary folder, copied into the workdir through ``etils.epath`` when the trace stops.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import jax
from etils import epath

from memarch.train.config import ProfileConfig
from memarch.train.workdir import as_path, copy_tree, is_url

PROFILE_DIR = "profile"  # the trace folder, in the workdir


class StepProfiler:
    """Starts and stops the trace around the configured window (:meth:`before` each step,
    :meth:`after` it); inactive when ``cfg.num_steps == 0`` or there is no run directory."""

    def __init__(self, cfg: ProfileConfig, run_dir: epath.Path | None):
        self.start = cfg.start_step
        self.stop_at = cfg.start_step + cfg.num_steps  # the step count that ends the window
        self.enabled = cfg.num_steps > 0 and run_dir is not None
        self.trace_dir = as_path(run_dir) / PROFILE_DIR if run_dir is not None else None
        self.active = False
        self._local: str | None = None  # where jax writes: trace_dir, or a temporary folder
        self.written = False  # a trace was stopped and is in trace_dir

    def before(self, step: int) -> None:
        """Starts the trace when ``step`` (0-based, about to run) opens the window."""
        if not self.enabled or self.active or step != self.start:
            return
        if is_url(self.trace_dir):
            self._local = tempfile.mkdtemp(prefix="memarch-profile-")
        else:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            self._local = str(self.trace_dir)
        jax.profiler.start_trace(self._local)
        self.active = True

    def after(self, done: int, state: Any) -> None:
        """Stops the trace once ``done`` steps have run and the window is complete."""
        if self.active and done >= self.stop_at:
            jax.block_until_ready(state)
            self.close()

    def close(self) -> None:
        """Stops a running trace (also on an error) and moves it into the workdir."""
        if not self.active:
            return
        self.active = False
        jax.profiler.stop_trace()
        if self._local != str(self.trace_dir):
            copy_tree(self._local, self.trace_dir)
            shutil.rmtree(self._local, ignore_errors=True)
        self.written = True


def trace_files(trace_dir: epath.Path) -> list[epath.Path]:
    """The ``*.xplane.pb`` files of the traces in ``trace_dir``."""
    return sorted(as_path(trace_dir).glob("plugins/profile/*/*.xplane.pb"))


__all__ = ["PROFILE_DIR", "StepProfiler", "trace_files"]
