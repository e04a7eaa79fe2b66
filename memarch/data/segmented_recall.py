"""Segmented retention: facts written in segment ``i``, queried ``d`` segments later
(``docs/continual_forgetting.md`` §Task B).

A sequence is ``S`` segments of ``C`` tokens. A model reads it one segment at a time,
carrying its memory (the mixers' decode caches) from segment to segment; with a window or
chunk of ``C`` tokens, a fact written ``d ≥ 1`` segments ago can only be answered from the
memory. The reset control clears the memory at each boundary, so ``R(d ≥ 1)`` must fall to
chance (:func:`memarch.eval.forgetting.segmented_retention`).

Layout (MQAR conventions: ``0`` filler, keys ``[1, V//2)``, values ``[V//2, V)``; the value
is the target at the query-key position)::

    segment i:  k1 v1 k2 v2 … kF vF | q1 0 q2 0 … | 0 0 … 0
                 F fact writes        query slots    filler up to C

* the ``S·F`` keys of a sequence are distinct (each query has exactly one answer); values
  are drawn uniformly *with replacement* from the ``W = V − V//2`` value tokens, independently
  of everything else, so a reader that cannot see the write scores exactly ``1/W`` in
  expectation (the chance level of the reset control);
* segment ``i`` asks, for each distance ``d`` in ``distances`` with ``i − d ≥ 0``,
  ``Q = queries_per_distance`` facts of segment ``i − d`` (distinct, drawn without
  replacement), the slots in random order.

Each example is a pure function of ``(seed, index)``; :meth:`SegmentedRecallSource.queries`
gives, for every labelled position, the segment that wrote the fact and the one that asks.
"""

from __future__ import annotations

import dataclasses
import operator
from numbers import Integral

import numpy as np

from memarch.data.source import IGNORE_INDEX, SyntheticSource


@dataclasses.dataclass(frozen=True)
class SegmentedRecallConfig:
    """``S`` segments of ``C`` tokens, ``F`` facts each; see the module docstring."""

    vocab_size: int  # V: keys in [1, V//2), values in [V//2, V)
    num_segments: int  # S
    segment_len: int  # C tokens per segment (the window / chunk of the model)
    facts_per_segment: int = 4  # F facts written at the start of each segment
    distances: tuple[int, ...] = (0, 1, 2, 4)  # d: segment i asks facts of segment i − d
    queries_per_distance: int = 2  # Q facts asked per (segment, distance), <= F

    @property
    def seq_len(self) -> int:
        return self.num_segments * self.segment_len

    @property
    def num_values(self) -> int:
        return self.vocab_size - self.vocab_size // 2

    def validate(self) -> None:
        """Raises ``ValueError`` naming the offending field and the accepted values."""
        for name in (
            "vocab_size",
            "num_segments",
            "segment_len",
            "facts_per_segment",
            "queries_per_distance",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        d = self.distances
        if (
            not isinstance(d, tuple)
            or not d
            or any(isinstance(x, bool) or not isinstance(x, Integral) for x in d)
            or len(set(d)) != len(d)
            or not all(0 <= x < self.num_segments for x in d)
        ):
            raise ValueError(
                f"distances must be a non-empty tuple of distinct ints in "
                f"[0, num_segments={self.num_segments}); got {d!r}"
            )
        if self.queries_per_distance > self.facts_per_segment:
            raise ValueError(
                f"queries_per_distance must be in [1, facts_per_segment="
                f"{self.facts_per_segment}]; got {self.queries_per_distance}"
            )
        need = self.num_segments * self.facts_per_segment
        if self.vocab_size // 2 - 1 < need:
            raise ValueError(
                f"vocab_size must leave num_segments·facts_per_segment = {need} distinct keys "
                f"in [1, V//2), i.e. vocab_size >= {2 * need + 2}; got {self.vocab_size}"
            )
        used = 2 * self.facts_per_segment + 2 * self.queries_per_distance * len(d)
        if self.segment_len < used:
            raise ValueError(
                f"segment_len must be >= 2·facts_per_segment + 2·queries_per_distance·"
                f"len(distances) = {used} (writes plus query slots); got {self.segment_len}"
            )


def chance_accuracy(config: SegmentedRecallConfig) -> float:
    """``1 / W``: a reader that cannot see the write (values are uniform and independent)."""
    config.validate()
    return 1.0 / config.num_values


def _generate(config: SegmentedRecallConfig, seed: int, index: int):
    """``(inputs int32[S·C], targets int32[S·C], positions, write_seg, query_seg)``."""
    s_num, c, f, q = (
        config.num_segments,
        config.segment_len,
        config.facts_per_segment,
        config.queries_per_distance,
    )
    half = config.vocab_size // 2
    rng = np.random.default_rng([seed, index])
    keys = (1 + rng.choice(half - 1, size=s_num * f, replace=False)).reshape(s_num, f)
    values = half + rng.integers(config.num_values, size=(s_num, f))
    inputs = np.zeros(config.seq_len, dtype=np.int32)
    targets = np.full(config.seq_len, IGNORE_INDEX, dtype=np.int32)
    positions, write_seg, query_seg = [], [], []
    for i in range(s_num):
        base = i * c
        inputs[base : base + 2 * f : 2] = keys[i]
        inputs[base + 1 : base + 2 * f : 2] = values[i]
        asks = [
            (i - d, int(n))
            for d in config.distances
            if i - d >= 0
            for n in rng.choice(f, size=q, replace=False)
        ]
        for slot, t in enumerate(rng.permutation(len(asks))):
            j, n = asks[t]
            pos = base + 2 * f + 2 * slot
            inputs[pos], targets[pos] = keys[j, n], values[j, n]
            positions.append(pos)
            write_seg.append(j)
            query_seg.append(i)
    meta = (np.asarray(positions), np.asarray(write_seg), np.asarray(query_seg))
    return inputs, targets, *meta


class SegmentedRecallSource(SyntheticSource):
    """Random-access segmented-recall sequences (``src[i]``: ``{"inputs", "targets"}``)."""

    task = "segmented recall"
    config: SegmentedRecallConfig

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return _generate(self.config, self.seed, index)[:2]

    def queries(self, index: int) -> dict[str, np.ndarray]:
        """``{"position", "write_segment", "query_segment"}``: int arrays ``[M]`` over the
        labelled positions of example ``index``, in position order."""
        index = operator.index(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"{self.task} index must be in [0, {self.num_examples}); got {index}")
        _, _, pos, w, qs = _generate(self.config, self.seed, index)
        return {"position": pos, "write_segment": w, "query_segment": qs}


__all__ = ["SegmentedRecallConfig", "SegmentedRecallSource", "chance_accuracy"]
