"""Key-value overwrite stream: interleaved writes, overwrites and queries, labelled with the
latest value (``docs/continual_forgetting.md`` §Task A).

Built on the ideas of forgetting MQAR (:mod:`memarch.data.mqar`): keys from the lower half of
the vocabulary, values from the upper half, the label at the query-key position (the value is
never an input token of a query), one ``np.random.default_rng([seed, index])`` per example.
Here writes and queries are interleaved in one stream of two-token **events**.

Layout
------
With vocabulary ``V``, length ``L`` (even), ``E = L / 2`` events and ``K`` live keys:

* tokens: ``0`` filler, ``1`` QUERY marker, ``2`` UNSET (the answer "never written"), keys
  ``[3, V//2)``, values ``[V//2, V)``. Each example draws its ``K`` keys (distinct) and one
  **fresh** value per write: no value token occurs twice in an example, so a wrong answer
  names exactly one (key, write) — or nothing;
* event ``e`` occupies positions ``2e, 2e + 1``:

  - **write** ``k v`` (no label). While some of the ``K`` keys are unwritten, a write adds the
    next one unless (with probability ``p_update``, once a key exists) it **overwrites** a
    uniformly chosen written key; when all ``K`` are written every write is an overwrite;
  - **query** ``QUERY k``, labelled at the key's position ``2e + 1`` with the key's latest
    value. With probability ``unset_prob`` (while some key is unwritten) it asks an unwritten
    key and the label is UNSET;
  - **filler** ``0 0`` (no label): separates token distance from event count;

* the first ``E − Q_f`` events are drawn one after another: filler with probability
  ``filler_ratio``, else a query with probability ``query_prob`` (once a key is written),
  else a write; the last ``Q_f = num_final_queries`` events are queries of distinct written
  keys (drawn with replacement if fewer are written).

Every query has exactly one correct answer. Per-query metadata (:class:`OverwriteQuery`)
gives the lag since the key's last write (tokens and events), its number of earlier
overwrites (proactive interference), the writes of other keys since (retroactive
interference), and the stale values of the key and the values of other keys, so that an
evaluator can bucket accuracy and classify errors (:mod:`memarch.eval.forgetting`).

Worked example (``V=16``: keys ``[3, 8)``, values ``[8, 16)``; ``Q`` = QUERY)::

    event      0       1       2       3       4
    inputs    3  9    5 12    Q  3    3 14    Q  3
    targets   .  .    .  .    .  9    .  .    .  14

The query at position 5 has lag 4 tokens / 2 events, 0 earlier overwrites and one write of
another key since; the query at position 9 has lag 2 / 1, 1 earlier overwrite, stale values
``(9,)`` and other keys' values ``(12,)``.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from numbers import Integral, Real

import numpy as np

from memarch.data.source import IGNORE_INDEX, SyntheticSource

FILLER = 0
QUERY = 1  # marks a query event: "QUERY k" asks for k's latest value
UNSET = 2  # the answer to a query of a key that was never written
FIRST_KEY = 3


@dataclasses.dataclass(frozen=True)
class OverwriteStreamConfig:
    """One overwrite-stream slice; see the module docstring for the layout."""

    vocab_size: int  # V: keys in [3, V//2), values in [V//2, V)
    seq_len: int  # L, even: L/2 two-token events
    num_keys: int = 8  # K live keys
    p_update: float = 0.5  # P(a write overwrites an existing key) while new keys remain
    query_prob: float = 0.2  # P(a non-filler event is a query) once a key is written
    filler_ratio: float = 0.0  # P(an event is filler "0 0"), in [0, 1)
    unset_prob: float = 0.0  # P(a query asks a never-written key; label UNSET)
    num_final_queries: int = 0  # Q_f distinct written keys queried at the end, in [0, K]

    @property
    def num_events(self) -> int:
        return self.seq_len // 2

    @property
    def num_values(self) -> int:
        """Value tokens ``W = V − V//2``."""
        return self.vocab_size - self.vocab_size // 2

    def validate(self) -> None:
        """Raises ``ValueError`` naming the offending field and the accepted values."""
        for name in ("vocab_size", "seq_len", "num_keys", "num_final_queries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise ValueError(f"{name} must be an int; got {value!r}")
        for name, hi, closed in (
            ("p_update", 1.0, True),
            ("query_prob", 1.0, False),
            ("filler_ratio", 1.0, False),
            ("unset_prob", 1.0, True),
        ):
            p = getattr(self, name)
            ok = isinstance(p, Real) and not isinstance(p, bool) and math.isfinite(p)
            if not ok or p < 0 or p > hi or (p == hi and not closed):
                rng = "[0, 1]" if closed else "[0, 1)"
                raise ValueError(f"{name} must be a float in {rng}; got {p!r}")
        if self.num_keys < 1:
            raise ValueError(f"num_keys must be >= 1; got {self.num_keys}")
        if self.vocab_size // 2 - FIRST_KEY < self.num_keys:
            raise ValueError(
                f"vocab_size must leave num_keys={self.num_keys} keys in [3, V//2), i.e. "
                f"vocab_size >= {2 * (self.num_keys + FIRST_KEY)}; got {self.vocab_size}"
            )
        if not 0 <= self.num_final_queries <= self.num_keys:
            raise ValueError(
                f"num_final_queries must be in [0, num_keys={self.num_keys}]; "
                f"got {self.num_final_queries}"
            )
        if self.seq_len <= 0 or self.seq_len % 2:
            raise ValueError(f"seq_len must be a positive even int; got {self.seq_len}")
        if self.num_events < self.num_final_queries + 1:
            raise ValueError(
                f"seq_len must be >= 2·(num_final_queries + 1) = "
                f"{2 * (self.num_final_queries + 1)} (one write before the final queries); "
                f"got {self.seq_len}"
            )
        if self.num_values < self.num_events:
            raise ValueError(
                f"vocab_size must give a fresh value to every write: V − V//2 >= seq_len/2 = "
                f"{self.num_events}, i.e. vocab_size >= {2 * self.num_events}; "
                f"got {self.vocab_size}"
            )


def chance_accuracy(config: OverwriteStreamConfig) -> float:
    """A uniform guess over the answers: ``1 / W``, or ``1 / (W + 1)`` with UNSET queries."""
    config.validate()
    return 1.0 / (config.num_values + (config.unset_prob > 0))


@dataclasses.dataclass(frozen=True)
class OverwriteQuery:
    """One labelled query (fields that do not apply to an UNSET query are −1 / empty)."""

    position: int  # token position of the queried key; targets[position] == label
    key: int
    label: int  # the key's latest value, or UNSET
    event: int  # event index of the query
    lag_tokens: int  # position − position of the latest write's value token
    lag_events: int  # event − event of the latest write
    prior_updates: int  # earlier overwrites of the key (writes of it − 1)
    writes_since: int  # writes of other keys since the key's latest write
    write_position: int  # position of the latest write's key token
    stale_values: tuple[int, ...]  # the key's earlier values, oldest first
    other_values: tuple[int, ...]  # values written to other keys before the query
    final: bool  # one of the final queries

    @property
    def unset(self) -> bool:
        return self.label == UNSET


def _generate(
    config: OverwriteStreamConfig, seed: int, index: int
) -> tuple[np.ndarray, np.ndarray, list[OverwriteQuery]]:
    """Example ``index`` of stream ``seed``: ``(inputs int32[L], targets int32[L], queries)``."""
    v, k_live = config.vocab_size, config.num_keys
    half = v // 2
    rng = np.random.default_rng([seed, index])
    keys = FIRST_KEY + rng.choice(half - FIRST_KEY, size=k_live, replace=False)
    fresh = iter(half + rng.choice(config.num_values, size=config.num_events, replace=False))
    inputs = np.zeros(config.seq_len, dtype=np.int32)
    targets = np.full(config.seq_len, IGNORE_INDEX, dtype=np.int32)
    history: list[list[tuple[int, int]]] = [[] for _ in range(k_live)]  # (value, event) writes
    writes_so_far = 0  # write events so far
    write_count_at: dict[int, int] = {}  # event of a write -> writes before it
    queries: list[OverwriteQuery] = []

    def query(e: int, slot: int, final: bool) -> None:
        pos = 2 * e + 1
        inputs[2 * e], inputs[pos] = QUERY, keys[slot]
        hist = history[slot]
        others = tuple(val for other, h in enumerate(history) if other != slot for val, _ in h)
        if not hist:
            targets[pos] = UNSET
            queries.append(
                OverwriteQuery(
                    pos, int(keys[slot]), UNSET, e, -1, -1, -1, -1, -1, (), others, final
                )
            )
            return
        value, w_event = hist[-1]
        targets[pos] = value
        queries.append(
            OverwriteQuery(
                position=pos,
                key=int(keys[slot]),
                label=int(value),
                event=e,
                lag_tokens=pos - (2 * w_event + 1),
                lag_events=e - w_event,
                prior_updates=len(hist) - 1,
                writes_since=writes_so_far - write_count_at[w_event] - 1,
                write_position=2 * w_event,
                stale_values=tuple(int(x) for x, _ in hist[:-1]),
                other_values=others,
                final=final,
            )
        )

    num_written = 0  # keys are added in the (random) order of `keys`
    interleaved = config.num_events - config.num_final_queries
    for e in range(interleaved):
        if rng.random() < config.filler_ratio:
            continue  # filler "0 0"
        if num_written and rng.random() < config.query_prob:
            if num_written < k_live and rng.random() < config.unset_prob:
                query(e, int(rng.integers(num_written, k_live)), False)
            else:
                query(e, int(rng.integers(num_written)), False)
            continue
        add = num_written < k_live and (num_written == 0 or rng.random() >= config.p_update)
        slot = num_written if add else int(rng.integers(num_written))
        num_written += add
        value = int(next(fresh))
        inputs[2 * e], inputs[2 * e + 1] = keys[slot], value
        history[slot].append((value, e))
        write_count_at[e] = writes_so_far
        writes_so_far += 1
    if config.num_final_queries:
        q = config.num_final_queries
        slots = rng.choice(num_written, size=q, replace=num_written < q)
        for i, slot in enumerate(slots):
            query(interleaved + i, int(slot), True)
    return inputs, targets, queries


class OverwriteStreamSource(SyntheticSource):
    """Random-access overwrite-stream examples; ``src.queries(i)`` is their metadata.

    ``src[i]`` is ``{"inputs", "targets"}: int32[Lp]`` (a pure function of ``(seed, i)``);
    ``src.queries(i)`` lists the :class:`OverwriteQuery` of example ``i`` in position order.
    """

    task = "overwrite stream"
    config: OverwriteStreamConfig

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets, _ = _generate(self.config, self.seed, index)
        return inputs, targets

    def queries(self, index: int) -> list[OverwriteQuery]:
        index = operator.index(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"{self.task} index must be in [0, {self.num_examples}); got {index}")
        return _generate(self.config, self.seed, index)[2]


__all__ = [
    "FILLER",
    "QUERY",
    "UNSET",
    "OverwriteQuery",
    "OverwriteStreamConfig",
    "OverwriteStreamSource",
    "chance_accuracy",
]
