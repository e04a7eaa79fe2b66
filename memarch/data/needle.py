"""Needle in a haystack: key→value (or passkey) needles hidden in synthetic filler.

Reference: the passkey task and RULER's S-NIAH / multikey NIAH (arXiv 2404.06654), reduced to
tokens (``docs/recall_tasks.md`` §Needle in a haystack).

Layout
------
With vocabulary ``V``, length ``L``, ``N`` needles and values of ``m`` tokens:

* keys come from ``[1, V//2)`` and value tokens from ``[V//2, V)`` (as in MQAR);
* a **needle** is ``n = 1 + m`` tokens ``k v_1 … v_m``; the ``N`` keys are distinct;
* the **haystack** is positions ``[0, H)``, ``H = L − Q·m``: filler tokens drawn uniformly
  from the key range *minus the needle keys* (so each key occurs once in the haystack, and
  every query has exactly one answer), with the needles written over it, never overlapping;
* **depth**: needle ``j`` starts at ``s_j``; its depth is ``100 · s_j / (H − n)`` %, so 0 %
  is the first token and 100 % ends right before the query region. A fixed ``depth`` (one
  needle only) puts it at ``s = round(depth/100 · (H − n))``; otherwise the starts are drawn
  uniformly among the non-overlapping placements (``N`` sorted offsets in ``[0, H − N·n]``,
  drawn with replacement, plus ``j·n``);
* the **query region** ``[H, L)`` asks for ``Q`` needles once each (all ``N`` by default;
  ``num_queries = Q < N`` leaves ``N − Q`` **distractor** needles never asked, as in RULER's
  multikey NIAH), in a random order: the slot of needle ``j`` is the ``m`` tokens
  ``k_j v_j1 … v_j(m−1)`` (teacher forcing) with targets ``v_j1 … v_jm``: the value is the
  target at the key's position (shifted by one, as in MQAR). ``targets`` is
  ``IGNORE_INDEX`` everywhere else;
* **passkey** style (``passkey=True``, one needle): the key is the fixed marker token 1
  ("the pass key is"; never filler) and the value is an ``m``-digit number, digits being the
  10 tokens ``[V//2, V//2 + 10)``.

Worked example (``V=16, L=12, N=1, m=2``, key 3, value ``(9, 12)``, depth 50 %: ``H = 10``,
``n = 3``, ``s = round(0.5 · 7) = 4``; filler shown as ``f``)::

    position  0    1    2    3    4    5    6    7    8    9   10   11
    inputs    f    f    f    f    3    9   12    f    f    f    3    9
    targets -100 -100 -100 -100 -100 -100 -100 -100 -100 -100   9   12

Each example is a pure function of ``(seed, index)`` (its own
``np.random.default_rng([seed, index])``), so the source is random-access.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from numbers import Integral, Real

import numpy as np

from memarch.data.source import IGNORE_INDEX, SyntheticSource, check_seed

PASSKEY_MARKER = 1  # "the pass key is"
NUM_DIGITS = 10  # passkey digit tokens [V//2, V//2 + 10)


@dataclasses.dataclass(frozen=True)
class NeedleConfig:
    """One needle slice ``(V, L, N, m)``; see the module docstring for the layout."""

    vocab_size: int  # V: keys in [1, V//2), value tokens in [V//2, V)
    seq_len: int  # L
    num_needles: int = 1  # N distinct key→value needles in the haystack
    value_len: int = 1  # m tokens per value (the number of digits for a passkey)
    depth: float | None = None  # % of the haystack where the needle starts; None = drawn
    passkey: bool = False  # key = marker token 1, value = m digits (one needle)
    num_queries: int | None = None  # Q needles asked (None = all N; the rest are distractors)

    @property
    def num_asked(self) -> int:
        """Number ``Q`` of needles queried (``N`` unless ``num_queries`` is set)."""
        return self.num_needles if self.num_queries is None else self.num_queries

    @property
    def needle_len(self) -> int:
        """Tokens ``1 + m`` of one needle (key + value)."""
        return 1 + self.value_len

    @property
    def query_len(self) -> int:
        """Length ``Q·m`` of the query region."""
        return self.num_asked * self.value_len

    @property
    def haystack_len(self) -> int:
        """Length ``H = L − N·m`` of the haystack (everything before the first query)."""
        return self.seq_len - self.query_len

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ``ValueError`` naming the offending field and the accepted values."""
        for name in ("vocab_size", "seq_len", "num_needles", "value_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise ValueError(f"{name} must be an int; got {value!r}")
        if self.num_needles < 1:
            raise ValueError(f"num_needles must be >= 1; got {self.num_needles}")
        if self.value_len < 1:
            raise ValueError(f"value_len must be >= 1; got {self.value_len}")
        if not isinstance(self.passkey, bool):
            raise ValueError(f"passkey must be a bool; got {self.passkey!r}")
        v, n, q = self.vocab_size, self.num_needles, self.num_queries
        if q is not None and (
            isinstance(q, bool) or not isinstance(q, Integral) or not 1 <= q <= n
        ):
            raise ValueError(
                f"num_queries must be None (all needles) or an int in [1, num_needles={n}]; "
                f"got {q!r}"
            )
        if self.passkey:
            if n != 1:
                raise ValueError(f"num_needles must be 1 with passkey=True; got {n}")
            if v // 2 < 3 or v - v // 2 < NUM_DIGITS:
                raise ValueError(
                    f"vocab_size must be >= {2 * NUM_DIGITS} for passkey=True (a marker, filler "
                    f"and {NUM_DIGITS} digit tokens); got {v}"
                )
        elif v // 2 - 1 < n + 1:
            raise ValueError(
                f"vocab_size must leave num_needles={n} keys plus >= 1 filler token in "
                f"[1, V//2), i.e. vocab_size >= {2 * n + 4}; got {v}"
            )
        need = n * self.needle_len + self.query_len
        if self.seq_len < need:
            raise ValueError(
                f"seq_len must be >= num_needles·(1 + value_len) + num_queries·value_len = "
                f"{need} (needles plus queries); got {self.seq_len}"
            )
        d = self.depth
        if d is not None:
            if (
                isinstance(d, bool)
                or not isinstance(d, Real)
                or not (math.isfinite(d) and 0 <= d <= 100)
            ):
                raise ValueError(f"depth must be None or a float in [0, 100] (%); got {d!r}")
            if n != 1:
                raise ValueError(
                    f"depth fixes one needle's placement: it needs num_needles=1 (got {n}); "
                    "use depth=None to draw the depths of several needles"
                )


def answer_tokens(config: NeedleConfig) -> np.ndarray:
    """The candidate answers (int32): the 10 digits for a passkey, else ``[V//2, V)``."""
    half = config.vocab_size // 2
    stop = half + NUM_DIGITS if config.passkey else config.vocab_size
    return np.arange(half, stop, dtype=np.int32)


def chance_accuracy(config: NeedleConfig) -> float:
    """Per value token: ``1/10`` (a uniform digit) for a passkey, else ``1 / (V − V//2)``."""
    config.validate()
    return 1.0 / (NUM_DIGITS if config.passkey else config.vocab_size - config.vocab_size // 2)


def needle_depth(config: NeedleConfig, start: int) -> float:
    """Depth ``100 · start / (H − n)`` (%) of a needle starting at ``start``."""
    free = config.haystack_len - config.needle_len
    return 100.0 * start / free if free > 0 else 0.0


def _starts(config: NeedleConfig, rng: np.random.Generator) -> np.ndarray:
    """Needle start positions ``int64 [N]`` (increasing, non-overlapping)."""
    h, n, big_n = config.haystack_len, config.needle_len, config.num_needles
    if config.depth is not None:
        return np.array([round(config.depth / 100.0 * (h - n))])
    offsets = np.sort(rng.integers(0, h - big_n * n + 1, size=big_n))
    return offsets + n * np.arange(big_n)


def needle_example(
    config: NeedleConfig, *, seed: int, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Example ``index`` of stream ``seed``: ``(inputs int32[L], targets int32[L],
    starts int64[N])`` with ``starts`` the needles' start positions in the haystack."""
    config.validate()
    check_seed(seed)
    index = operator.index(index)
    if index < 0:
        raise IndexError(f"needle index must be >= 0; got {index}")
    v, big_n, m = config.vocab_size, config.num_needles, config.value_len
    half = v // 2
    rng = np.random.default_rng([seed, index])
    if config.passkey:
        keys = np.array([PASSKEY_MARKER])
        values = half + rng.integers(0, NUM_DIGITS, size=(1, m))
        pool = np.arange(2, half)
    else:
        keys = 1 + rng.choice(half - 1, size=big_n, replace=False)
        values = rng.integers(half, v, size=(big_n, m))
        pool = np.setdiff1d(np.arange(1, half), keys)
    h = config.haystack_len
    inputs = np.empty(config.seq_len, np.int32)
    inputs[:h] = rng.choice(pool, size=h)
    starts = _starts(config, rng)
    for j, s in enumerate(starts):
        inputs[s] = keys[j]
        inputs[s + 1 : s + 1 + m] = values[j]
    targets = np.full(config.seq_len, IGNORE_INDEX, np.int32)
    for slot, j in enumerate(rng.permutation(big_n)[: config.num_asked]):
        q = h + slot * m
        inputs[q] = keys[j]
        inputs[q + 1 : q + m] = values[j, : m - 1]
        targets[q : q + m] = values[j]
    return inputs, targets, starts


def oracle_predictions(config: NeedleConfig, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Answers read from ``inputs [B, L]`` alone: at a labelled position ``pos`` in the query
    slot starting at ``q`` (slots of ``m`` tokens from ``H``), the haystack token
    ``pos − q + 1`` places after the only haystack occurrence of the slot's key
    ``inputs[q]``. Returns ``int32 [B, L]`` (``IGNORE_INDEX`` off the labels)."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    h, m = config.haystack_len, config.value_len
    out = np.full(targets.shape, IGNORE_INDEX, np.int32)
    for b, pos in zip(*np.nonzero(targets != IGNORE_INDEX), strict=True):
        q = h + (pos - h) // m * m
        (where,) = np.nonzero(inputs[b, :h] == inputs[b, q])
        out[b, pos] = inputs[b, where[0] + 1 + pos - q]
    return out


class NeedleSource(SyntheticSource):
    """Random-access needle data (grain ``RandomAccessDataSource`` protocol).

    ``src[i]`` is ``{"inputs": int32[Lp], "targets": int32[Lp]}`` with ``Lp = pad_to or L``, a
    pure function of ``(seed, i)``; right padding is 0 in inputs and ``IGNORE_INDEX`` in
    targets (to batch with slices of other lengths).
    """

    task = "needle"
    config: NeedleConfig

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets, _ = needle_example(self.config, seed=self.seed, index=index)
        return inputs, targets
