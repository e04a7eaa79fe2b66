"""Fact stream for continual training in the weights: a sequence of tasks, each a set of
random facts ``[BOS] k1 k2 → v`` (``docs/continual_forgetting.md`` §Task C).

Layout
------
Tokens: ``0`` padding, ``1`` BOS, ``2`` ARROW, keys ``[3, V//2)``, values ``[V//2, V)``.
A fact is one row of 4 tokens, labelled at the arrow::

    inputs   BOS  k1   k2   ARROW
    targets  −100 −100 −100 v

* a stream (``seed``) holds ``T`` tasks of ``N`` facts. The ``T·N`` key pairs ``(k1, k2)``
  are distinct across the whole stream (drawn without replacement from the ``(V//2 − 3)²``
  pairs with ``default_rng([seed])`` and dealt to tasks in order), so every query has exactly
  one correct answer and tasks are disjoint; the values of task ``j`` are drawn uniformly
  with replacement by ``default_rng([seed, j])``, so a guess scores ``1 / (V − V//2)``;
* training on task ``j`` shows each fact ``E = exposures`` times: example ``i`` of
  :meth:`FactStream.train_source` is fact ``perm_e[i mod N]`` of epoch ``e = i // N`` (a fresh
  permutation per epoch); the evaluation source lists the ``N`` facts in order;
* **rehearsal** (optional): in training batches of task ``t ≥ 1``, a fraction of the rows
  (``round(rehearsal_fraction · B)``) replays facts of earlier tasks ``j < t``, the task drawn
  uniformly (``uniform``) or with probability ∝ ``(t − j)^(−α)`` (``power``; recent tasks more
  often), the fact uniformly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from numbers import Integral, Real

import numpy as np

from memarch.data.source import IGNORE_INDEX, SyntheticSource, check_seed

PAD = 0
BOS = 1
ARROW = 2
FIRST_KEY = 3
FACT_LEN = 4  # BOS k1 k2 ARROW
REHEARSAL = ("none", "uniform", "power")


@dataclasses.dataclass(frozen=True)
class FactStreamConfig:
    """``T`` tasks of ``N`` facts each, seen ``E`` times; see the module docstring."""

    vocab_size: int = 1024  # V: keys in [3, V//2), values in [V//2, V)
    num_tasks: int = 2  # T
    facts_per_task: int = 32  # N
    exposures: int = 4  # E: times each fact is shown while its task is trained
    rehearsal: str = "none"  # none | uniform | power: replay of earlier tasks' facts
    rehearsal_fraction: float = 0.0  # fraction of each batch replayed (tasks t >= 1), [0, 1)
    rehearsal_alpha: float = 1.0  # power rehearsal: P(task j) ∝ (t − j)^(−α), α > 0

    seq_len = FACT_LEN  # rows are always [BOS k1 k2 ARROW]

    @property
    def num_keys(self) -> int:
        return self.vocab_size // 2 - FIRST_KEY

    @property
    def num_values(self) -> int:
        return self.vocab_size - self.vocab_size // 2

    def validate(self) -> None:
        """Raises ``ValueError`` naming the offending field and the accepted values."""
        for name in ("vocab_size", "num_tasks", "facts_per_task", "exposures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        if self.num_keys < 1:
            raise ValueError(f"vocab_size must be >= 8 (keys [3, V//2)); got {self.vocab_size}")
        need = self.num_tasks * self.facts_per_task
        if need > self.num_keys**2:
            raise ValueError(
                f"num_tasks·facts_per_task = {need} facts need distinct key pairs, but "
                f"vocab_size={self.vocab_size} gives only (V//2 − 3)² = {self.num_keys**2}"
            )
        if self.rehearsal not in REHEARSAL:
            raise ValueError(f"rehearsal must be one of {list(REHEARSAL)}; got {self.rehearsal!r}")
        r = self.rehearsal_fraction
        if isinstance(r, bool) or not isinstance(r, Real) or not (math.isfinite(r) and 0 <= r < 1):
            raise ValueError(f"rehearsal_fraction must be a float in [0, 1); got {r!r}")
        if self.rehearsal == "none" and r:
            raise ValueError(
                f"rehearsal_fraction={r} needs rehearsal='uniform' or 'power' (got 'none')"
            )
        a = self.rehearsal_alpha
        if isinstance(a, bool) or not isinstance(a, Real) or not (math.isfinite(a) and a > 0):
            raise ValueError(f"rehearsal_alpha must be a finite float > 0; got {a!r}")


def chance_accuracy(config: FactStreamConfig) -> float:
    """``1 / (V − V//2)``: values are uniform and independent of the keys."""
    config.validate()
    return 1.0 / config.num_values


def fact_rows(keys: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``{"inputs", "targets"}: int32[M, 4]`` of facts ``keys [M, 2]`` → ``values [M]``."""
    m = len(values)
    inputs = np.empty((m, FACT_LEN), dtype=np.int32)
    inputs[:, 0], inputs[:, 1:3], inputs[:, 3] = BOS, keys, ARROW
    targets = np.full((m, FACT_LEN), IGNORE_INDEX, dtype=np.int32)
    targets[:, 3] = values
    return {"inputs": inputs, "targets": targets}


class FactStream:
    """The ``T`` tasks of one stream: ``facts(j)``, sources per task, training batches."""

    def __init__(self, config: FactStreamConfig, *, seed: int):
        config.validate()
        check_seed(seed)
        self.config = config
        self.seed = int(seed)

    @functools.cached_property
    def _keys(self) -> np.ndarray:
        """``int32[T, N, 2]``: the stream's distinct key pairs, dealt to tasks in order."""
        c = self.config
        rng = np.random.default_rng([self.seed])
        pairs = rng.choice(c.num_keys**2, size=c.num_tasks * c.facts_per_task, replace=False)
        keys = FIRST_KEY + np.stack([pairs // c.num_keys, pairs % c.num_keys], axis=-1)
        return keys.reshape(c.num_tasks, c.facts_per_task, 2).astype(np.int32)

    def _check_task(self, task: int) -> int:
        task = operator.index(task)
        if not 0 <= task < self.config.num_tasks:
            raise ValueError(f"task must be in [0, num_tasks={self.config.num_tasks}); got {task}")
        return task

    def facts(self, task: int) -> tuple[np.ndarray, np.ndarray]:
        """Task ``task``'s facts: ``(keys int32[N, 2], values int32[N])``."""
        task = self._check_task(task)
        c = self.config
        rng = np.random.default_rng([self.seed, task])
        values = c.vocab_size // 2 + rng.integers(c.num_values, size=c.facts_per_task)
        return self._keys[task], values.astype(np.int32)

    def eval_source(self, task: int) -> FactTaskSource:
        """The ``N`` facts of ``task`` in order (the probe set)."""
        return FactTaskSource(self, task, shuffle=False)

    def train_source(self, task: int) -> FactTaskSource:
        """``N·E`` examples: each fact of ``task`` ``E`` times, reshuffled every epoch."""
        return FactTaskSource(self, task, shuffle=True)

    def steps_per_task(self, batch_size: int) -> int:
        """``ceil(N·E / B')`` with ``B' = B − round(rehearsal_fraction · B)`` new rows."""
        return math.ceil(
            self.config.facts_per_task * self.config.exposures / self.new_rows(batch_size)
        )

    def new_rows(self, batch_size: int) -> int:
        """Rows of a batch from the current task (the rest replays earlier tasks)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
        new = batch_size - round(self.config.rehearsal_fraction * batch_size)
        if new < 1:
            raise ValueError(
                f"rehearsal_fraction={self.config.rehearsal_fraction} leaves no row of the "
                f"current task in a batch of {batch_size}"
            )
        return new

    def train_batch(self, task: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """Batch ``step`` (0-based, within ``task``): ``{"inputs", "targets"}: int32[B, 4]``."""
        task = self._check_task(task)
        c = self.config
        new = self.new_rows(batch_size)
        src = self.train_source(task)
        rows = [src[(step * new + r) % len(src)] for r in range(new)]
        batch = {k: np.stack([row[k] for row in rows]) for k in ("inputs", "targets")}
        replay = batch_size - new
        if replay and task > 0:
            rng = np.random.default_rng([self.seed, task, step, 1])
            earlier = np.arange(task)
            if c.rehearsal == "power":
                w = (task - earlier).astype(np.float64) ** (-c.rehearsal_alpha)
            else:
                w = np.ones(task)
            which = rng.choice(earlier, size=replay, p=w / w.sum())
            idx = rng.integers(c.facts_per_task, size=replay)
            keys = np.stack([self.facts(j)[0][i] for j, i in zip(which, idx, strict=True)])
            values = np.array([self.facts(j)[1][i] for j, i in zip(which, idx, strict=True)])
            old = fact_rows(keys, values)
            batch = {k: np.concatenate([batch[k], old[k]]) for k in batch}
        elif replay:  # task 0 has nothing to replay: fill with its own facts
            more = [src[(step * new + new + r) % len(src)] for r in range(replay)]
            batch = {k: np.concatenate([batch[k], np.stack([m[k] for m in more])]) for k in batch}
        return batch


class FactTaskSource(SyntheticSource):
    """Random-access rows of one task (``src[i]``: ``{"inputs", "targets"}: int32[4]``)."""

    task = "fact stream"
    config: FactStreamConfig

    def __init__(self, stream: FactStream, task: int, *, shuffle: bool):
        c = stream.config
        n = c.facts_per_task * (c.exposures if shuffle else 1)
        super().__init__(c, seed=stream.seed, num_examples=n)
        self.stream = stream
        self.task_index = stream._check_task(task)
        self.shuffle = shuffle
        self._keys, self._values = stream.facts(self.task_index)

    def fact_index(self, index: int) -> int:
        """Which fact of the task example ``index`` shows."""
        n = self.config.facts_per_task
        if not self.shuffle:
            return index
        epoch = index // n
        perm = np.random.default_rng([self.seed, self.task_index, epoch, 0]).permutation(n)
        return int(perm[index % n])

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        f = self.fact_index(index)
        rows = fact_rows(self._keys[f : f + 1], self._values[f : f + 1])
        return rows["inputs"][0], rows["targets"][0]


__all__ = [
    "ARROW",
    "BOS",
    "FactStream",
    "FactStreamConfig",
    "FactTaskSource",
    "chance_accuracy",
    "fact_rows",
]
