"""Multi-query associative recall (MQAR) with the semantics of Zoology's ``multiquery_ar``.

Reference: Arora, Eyuboglu et al., "Zoology" (arXiv 2312.04927),
``HazyResearch/zoology: zoology/data/multiquery_ar.py``; ``num_passes`` is the JRT repeated
context (arXiv 2407.05483).

Layout
------
With vocabulary ``V``, length ``L``, ``N`` pairs and ``P`` passes:

* token 0 is filler; keys come from ``[1, V//2)`` and values from ``[V//2, V)``; each example
  draws ``N`` distinct keys and ``N`` distinct values (both uniformly, without replacement);
* the **context** ``k1 v1 k2 v2 … kN vN`` is tiled ``P`` times: positions ``[0, 2NP)``;
* the **query region** ``[2NP, L)`` holds ``S = (L − 2NP) / 2`` two-token slots. Key ``n`` goes
  to slot ``gap_n``: the ``gap_n`` are ``N`` distinct slots drawn without replacement (one
  after the other, renormalising) from ``p(i) ∝ a·i^(a−1)`` over ``i = 1 … S`` (slot
  ``i − 1``), so ``a = 0.01`` favours early slots (short recall distance) and ``a = 1`` is
  uniform. Key ``n`` sits at position ``q_n = 2NP + 2·gap_n``;
* Zoology builds a token stream and an answer stream of length ``L + 1`` and shifts them by
  one: ``inputs = tokens[:-1]``, ``targets = answers[1:]``, where ``answers[q_n + 1] = v_n``.
  The value therefore appears only as the *target* at the query-key position ``q_n``; it is
  never an input token in the query region (the slot's second token stays filler);
* ``targets`` is ``IGNORE_INDEX`` (−100) everywhere except the ``N`` query positions ``q_n``,
  where it is ``v_n``, so every query has exactly one correct answer;
* ``random_non_queries`` replaces every filler 0 in the query region of ``inputs`` by a token
  drawn uniformly from ``[0, V)``, as Zoology does (on by default in Zoology's code, off in its
  Figure 2 and off here). Such a filler may equal a key or a value; it carries no label.

**Forgetting MQAR** (``num_overwrites = R > 0``; Zoology's "forgetting MQAR" variant): after
the (tiled) context, ``R`` of the ``N`` keys, drawn without replacement in random order, are
re-assigned a fresh value (distinct from the ``N`` first values and from each other) as ``R``
more pairs ``k v'``; the context is then ``2NP + 2R`` tokens long and the label of a re-assigned
key's query is its **latest** value ``v'``. A memory that only adds (linear attention) holds both
values of a re-assigned key; one that overwrites (the delta rule) or forgets (a decay gate) can
answer with the latest.

Worked example (``V=12, L=16, N=2, P=1``; keys ``(2, 4)``, values ``(8, 7)``, gaps ``(4, 1)``,
so ``q = (4 + 8, 4 + 2) = (12, 6)``)::

    position  0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15
    inputs    2    8    4    7    0    0    4    0    0    0    0    0    2    0    0    0
    targets -100 -100 -100 -100 -100 -100   7 -100 -100 -100 -100 -100   8 -100 -100 -100

Differences from Zoology: each example is a pure function of ``(seed, index)`` (its own
``np.random.default_rng([seed, index])``) rather than one global ``np.random.seed`` stream, so
data are index-addressable; and ``num_passes > 1`` tiles the ``2N``-token block exactly ``P``
times (Zoology's code allocates the block at ``2NP`` before tiling). Zoology also asserts
``V > L``; that is not required here.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterable
from numbers import Integral, Real

import numpy as np

from memarch.data.source import IGNORE_INDEX, SyntheticSource, check_seed


@dataclasses.dataclass(frozen=True)
class MQARConfig:
    """One MQAR slice ``(V, L, N, P)``; see the module docstring for the layout."""

    vocab_size: int  # V; token 0 is filler; keys in [1, V//2), values in [V//2, V)
    seq_len: int  # L, even
    num_pairs: int  # N distinct key-value pairs
    power_a: float = 0.01  # query slot i drawn from p(i) ∝ a·i^(a−1); a = 1 is uniform
    num_passes: int = 1  # P: the context k1 v1 … kN vN is tiled P times (JRT)
    random_non_queries: bool = False  # random tokens instead of 0 in the query region
    num_overwrites: int = 0  # R keys re-assigned a new value after the context (label: latest)

    @property
    def context_len(self) -> int:
        """Length ``2·N·P + 2·R`` of the (tiled) context and its re-assignments."""
        return 2 * self.num_pairs * self.num_passes + 2 * self.num_overwrites

    @property
    def num_slots(self) -> int:
        """Number ``(L − 2NP) / 2`` of two-token query slots."""
        return (self.seq_len - self.context_len) // 2

    def validate(self) -> None:
        """Raises ``ValueError`` naming the offending field and the accepted values."""
        for name in ("vocab_size", "seq_len", "num_pairs", "num_passes", "num_overwrites"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise ValueError(f"{name} must be an int; got {value!r}")
        if self.num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1; got {self.num_pairs}")
        if self.num_passes < 1:
            raise ValueError(f"num_passes must be >= 1; got {self.num_passes}")
        if self.seq_len <= 0 or self.seq_len % 2:
            raise ValueError(f"seq_len must be a positive even int; got {self.seq_len}")
        if not 0 <= self.num_overwrites <= self.num_pairs:
            raise ValueError(
                f"num_overwrites must be in [0, num_pairs={self.num_pairs}]; "
                f"got {self.num_overwrites}"
            )
        v, n, r = self.vocab_size, self.num_pairs, self.num_overwrites
        if v // 2 - 1 < n or v - v // 2 < n + r:
            raise ValueError(
                f"vocab_size must leave >= num_pairs={n} keys in [1, V//2) and "
                f"num_pairs + num_overwrites = {n + r} values in [V//2, V), i.e. "
                f"vocab_size >= {2 * (n + r) + 2}; got {v}"
            )
        need = self.context_len + 2 * n
        if self.seq_len < need:
            raise ValueError(
                f"seq_len must be >= 2·num_pairs·num_passes + 2·num_overwrites + 2·num_pairs "
                f"= {need} (context, re-assignments, one slot per query); got {self.seq_len}"
            )
        a = self.power_a
        if isinstance(a, bool) or not isinstance(a, Real) or not (math.isfinite(a) and a > 0):
            raise ValueError(f"power_a must be a finite float > 0; got {a!r}")


def chance_accuracy(config: MQARConfig) -> float:
    """Chance accuracy ``1 / (V − V//2)``: a uniform guess among all candidate value tokens.

    (A guess among the ``N`` values of the context would score ``1 / N``.)
    """
    config.validate()
    return 1.0 / (config.vocab_size - config.vocab_size // 2)


def _slot_probs(num_slots: int, power_a: float) -> np.ndarray:
    """``p(i) ∝ a·i^(a−1)`` for ``i = 1 … S`` (float64 ``[S]``), computed in log space."""
    logw = (power_a - 1.0) * np.log(np.arange(1, num_slots + 1, dtype=np.float64))
    w = np.exp(logw - logw.max())
    return w / w.sum()


def _example(config: MQARConfig, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Example ``index`` of stream ``seed`` as ``(inputs int32[L], targets int32[L])``.

    Assumes ``config`` and ``seed`` are valid and ``index >= 0``.
    """
    v, n, ctx = config.vocab_size, config.num_pairs, config.context_len
    half = v // 2
    rng = np.random.default_rng([seed, index])
    r = config.num_overwrites
    keys = 1 + rng.choice(half - 1, size=n, replace=False)
    all_values = half + rng.choice(v - half, size=n + r, replace=False)
    values = all_values[:n]
    probs = _slot_probs(config.num_slots, config.power_a)
    gaps = rng.choice(config.num_slots, size=n, replace=False, p=probs)

    block = np.empty(2 * n, dtype=np.int32)
    block[0::2], block[1::2] = keys, values
    inputs = np.zeros(config.seq_len, dtype=np.int32)
    first = 2 * n * config.num_passes
    inputs[:first] = np.tile(block, config.num_passes)
    latest = values.copy()
    if r:  # R keys re-assigned fresh values, in random order, after the context
        which = rng.choice(n, size=r, replace=False)
        inputs[first:ctx:2], inputs[first + 1 : ctx : 2] = keys[which], all_values[n:]
        latest[which] = all_values[n:]
    query_pos = ctx + 2 * gaps
    inputs[query_pos] = keys
    targets = np.full(config.seq_len, IGNORE_INDEX, dtype=np.int32)
    targets[query_pos] = latest

    if config.random_non_queries:
        region = inputs[ctx:]  # a view: edits land in `inputs`
        filler = rng.integers(0, v, size=region.shape, dtype=np.int32)
        region[region == 0] = filler[region == 0]
    return inputs, targets


def mqar_batch(config: MQARConfig, *, seed: int, indices: Iterable[int]) -> dict[str, np.ndarray]:
    """Examples ``indices`` of stream ``seed``, stacked: ``{"inputs", "targets"}: int32[B, L]``.

    Row ``b`` equals ``MQARSource(config, seed=seed, ...)[indices[b]]`` (without padding).
    Negative indices raise ``IndexError``.
    """
    config.validate()
    check_seed(seed)
    rows = []
    for index in indices:
        index = operator.index(index)
        if index < 0:
            raise IndexError(f"MQAR index must be >= 0; got {index}")
        rows.append(_example(config, seed, index))
    shape = (len(rows), config.seq_len)
    inputs = np.stack([r[0] for r in rows]) if rows else np.zeros(shape, np.int32)
    targets = np.stack([r[1] for r in rows]) if rows else np.zeros(shape, np.int32)
    return {"inputs": inputs, "targets": targets}


class MQARSource(SyntheticSource):
    """Random-access MQAR data (grain ``RandomAccessDataSource`` protocol).

    ``src[i]`` is ``{"inputs": int32[Lp], "targets": int32[Lp]}`` with ``Lp = pad_to or L``:
    a pure function of ``(seed, i)``. Padding is ``0`` in inputs and ``IGNORE_INDEX`` in
    targets, appended on the right (to batch slices of different ``L`` together).
    """

    task = "MQAR"
    config: MQARConfig

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return _example(self.config, self.seed, index)
