"""Feeding random-access training batches to a (possibly multi-host) mesh.

Training batch ``s`` is rows ``s·B … s·B + B − 1`` of an endless random-access dataset, so
the data position is the step number and resumption is exact. Each process builds only the
rows its own devices hold — one step ahead in a background thread, or, with ``worker_count >
0`` (``data.worker_count``), in grain worker processes that read and pack ahead — and
assembles the global ``jax.Array`` sharded over the batch rule's mesh axes. The rows do not
depend on the worker count.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding

from memarch.data.packing import with_workers
from memarch.data.pipeline import batch_rows


class HostRows:
    """``host_rows(step)``: this process's ``rows`` of training batch ``step`` (picklable, for
    grain worker processes)."""

    def __init__(self, examples: grain.MapDataset, batch_size: int, rows: range):
        self.examples, self.batch_size, self.rows = examples, batch_size, rows

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        return batch_rows(self.examples, int(step), self.batch_size, self.rows)


class BatchLoader:
    """``loader(step) -> {"inputs", "targets"}: int32[B, T]`` global arrays on the mesh."""

    def __init__(
        self,
        examples: grain.MapDataset,
        batch_size: int,
        sharding: NamedSharding,
        *,
        worker_count: int = 0,
        num_steps: int | None = None,
    ):
        if worker_count and num_steps is None:
            raise ValueError("worker_count > 0 needs num_steps (the last step to read ahead to)")
        self.examples = examples
        self.worker_count = worker_count
        self.num_steps = num_steps
        self.batch_size = batch_size
        self.sharding = sharding
        first = examples[0]
        self.shapes = {k: (batch_size, *np.shape(v)) for k, v in first.items()}
        self.dtypes = {k: np.asarray(v).dtype for k, v in first.items()}
        shape = next(iter(self.shapes.values()))
        starts, stops = [], []
        for index in sharding.addressable_devices_indices_map(shape).values():
            rows = index[0] if index else slice(None)
            starts.append(rows.start or 0)
            stops.append(batch_size if rows.stop is None else rows.stop)
        self.rows = range(min(starts), max(stops))  # this process's rows
        self._single = jax.process_count() == 1
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memarch-batches")
        self._next: tuple[int, Future] | None = None
        self._stream: tuple[int, Iterator] | None = None  # (next step, worker iterator)

    def abstract(self) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes, dtypes and shardings of one batch (for ahead-of-time compilation)."""
        return {
            k: jax.ShapeDtypeStruct(s, self.dtypes[k], sharding=self.sharding)
            for k, s in self.shapes.items()
        }

    def host_rows(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of batch ``step`` as numpy arrays ``[len(rows), T]``."""
        return HostRows(self.examples, self.batch_size, self.rows)(step)

    def _from_workers(self, step: int) -> dict[str, np.ndarray]:
        if self._stream is None or self._stream[0] != step:  # first call, or a jump
            steps = grain.MapDataset.range(step, max(self.num_steps, step + 1))
            rows = steps.map(HostRows(self.examples, self.batch_size, self.rows))
            self._stream = (step, iter(with_workers(rows.to_iter_dataset(), self.worker_count)))
        batch = next(self._stream[1])
        self._stream = (step + 1, self._stream[1])
        return batch

    def _fetch(self, step: int) -> dict[str, np.ndarray]:
        if self.worker_count:
            return self._from_workers(step)
        if self._next is not None and self._next[0] == step:
            rows = self._next[1].result()
        else:
            rows = self.host_rows(step)
        self._next = (step + 1, self._pool.submit(self.host_rows, step + 1))
        return rows

    def __call__(self, step: int) -> dict[str, jax.Array]:
        rows = self._fetch(step)
        if self._single:
            return jax.device_put(rows, self.sharding)
        lo = self.rows.start

        def one(key):
            local = rows[key]

            def cb(index):
                r = index[0] if index else slice(None)
                start = (r.start or 0) - lo
                stop = (self.batch_size if r.stop is None else r.stop) - lo
                return local[(slice(start, stop), *index[1:])]

            return jax.make_array_from_callback(self.shapes[key], self.sharding, cb)

        return {k: one(k) for k in rows}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._stream = None  # grain's worker processes end with their iterator


__all__ = ["BatchLoader", "HostRows"]
