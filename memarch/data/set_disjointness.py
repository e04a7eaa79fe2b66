"""Set disjointness (JRT): name the one token two lists share.

Reference: Arora et al., "Just read twice" (JRT, arXiv 2407.05483),
``HazyResearch/prefix-linear-attention: synthetic/zoology/data/non_autoreg.py``; summarised in
``docs/recall_tasks.md`` §Set disjointness.

Layout
------
With vocabulary ``V`` and list lengths ``a`` (first) and ``b`` (second):

* special tokens: 0 padding (JRT's mask), 1 prefix, 2 list separator, 3 answer separator;
  list tokens come from ``[4, V)``;
* each example splits ``[4, V)`` in two halves at random; one list draws distinct tokens from
  one half, the other from the other half; then one random slot of the **longer** list (the
  second one when ``a == b``) is overwritten by a random token of the shorter list, so the
  lists share **exactly one** token;
* the sequence is ``[1] first [2] second [3]``, of length ``L = a + b + 3``; the target at the
  last position (the answer separator) is the shared token and ``targets`` is ``IGNORE_INDEX``
  everywhere else.

**Order.** ``a < b`` is *short-set-first* (a fixed-state model can store the short list, then
check each token of the long one), ``a > b`` *long-set-first* (it must store the whole long
list). The accuracy gap between the two orders at equal ``{a, b}`` is the order sensitivity
that JRT's repeated context closes: with ``num_passes = p`` the context ``[1] first [2] second``
is repeated ``p`` times before the answer separator (``L = p·(a + b + 2) + 1``), so a
fixed-state model reading the long-set-first order can check the second pass against the first.

Worked example (``V=16, a=2, b=3``; first ``(9, 5)``, second ``(12, 5, 14)``)::

    position  0    1    2    3    4    5    6    7
    inputs    1    9    5    2   12    5   14    3
    targets -100 -100 -100 -100 -100 -100 -100    5

Each example is a pure function of ``(seed, index)`` (its own
``np.random.default_rng([seed, index])``), so the source is random-access.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral

import numpy as np

from memarch.data.source import IGNORE_INDEX, SyntheticSource

PREFIX = 1  # starts the example
LIST_SEP = 2  # between the two lists
ANSWER_SEP = 3  # after the second list: predict the shared token here
FIRST_ITEM = 4  # list tokens are [FIRST_ITEM, V)


@dataclasses.dataclass(frozen=True)
class SetDisjointnessConfig:
    """One set-disjointness slice ``(V, a, b)``; see the module docstring for the layout."""

    vocab_size: int  # V: 0 pad, 1 prefix, 2 list separator, 3 answer separator, items [4, V)
    first_len: int  # a: tokens in the first list (a < b: short-set-first)
    second_len: int  # b: tokens in the second list (a > b: long-set-first)
    num_passes: int = 1  # p: times the context "[1] first [2] second" is read (JRT: 2)

    @property
    def seq_len(self) -> int:
        """Length ``L = p·(a + b + 2) + 1``: ``p`` passes of (prefix, first list, separator,
        second list), then the answer separator."""
        return self.num_passes * (self.first_len + self.second_len + 2) + 1

    @property
    def short_first(self) -> bool:
        """Whether the first list is the shorter one (``a < b``)."""
        return self.first_len < self.second_len

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ``ValueError`` naming the offending field and the accepted values."""
        for name in ("vocab_size", "first_len", "second_len", "num_passes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise ValueError(f"{name} must be an int; got {value!r}")
        for name in ("first_len", "second_len", "num_passes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        half = (self.vocab_size - FIRST_ITEM) // 2
        longest = max(self.first_len, self.second_len)
        if half < longest:
            raise ValueError(
                f"vocab_size must give each list a half of [{FIRST_ITEM}, V) with >= "
                f"max(first_len, second_len) = {longest} distinct tokens, i.e. vocab_size >= "
                f"{2 * longest + FIRST_ITEM}; got {self.vocab_size}"
            )


def answer_tokens(config: SetDisjointnessConfig) -> np.ndarray:
    """The candidate answers ``[4, V)`` (int32): every label is one of them."""
    return np.arange(FIRST_ITEM, config.vocab_size, dtype=np.int32)


def chance_accuracy(config: SetDisjointnessConfig) -> float:
    """Chance accuracy ``1 / (V − 4)``: a uniform guess among the list tokens.

    (A guess among the shorter list's tokens scores ``1 / min(a, b)``.)
    """
    config.validate()
    return 1.0 / (config.vocab_size - FIRST_ITEM)


def set_disjointness_example(
    config: SetDisjointnessConfig, seed: int, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Example ``index`` of stream ``seed`` as ``(inputs int32[L], targets int32[L])``.

    Assumes ``config`` and ``seed`` are valid and ``index >= 0``.
    """
    a, b = config.first_len, config.second_len
    rng = np.random.default_rng([seed, index])
    items = FIRST_ITEM + rng.permutation(config.vocab_size - FIRST_ITEM)
    half = len(items) // 2
    first = rng.choice(items[:half], size=a, replace=False)
    second = rng.choice(items[half : 2 * half], size=b, replace=False)
    short, long = (first, second) if a <= b else (second, first)
    shared = short[rng.integers(len(short))]
    long[rng.integers(len(long))] = shared
    context = np.concatenate([[PREFIX], first, [LIST_SEP], second])
    inputs = np.concatenate([*[context] * config.num_passes, [ANSWER_SEP]]).astype(np.int32)
    targets = np.full(config.seq_len, IGNORE_INDEX, np.int32)
    targets[-1] = shared
    return inputs, targets


def oracle_predictions(
    config: SetDisjointnessConfig, inputs: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Answers read from ``inputs [B, L]`` alone: at each labelled position, the token the two
    lists of the first pass (split at the list separator, ended by the next prefix or the answer
    separator) have in common. Returns ``int32 [B, L]``."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    out = np.full(targets.shape, IGNORE_INDEX, np.int32)
    for b, pos in zip(*np.nonzero(targets != IGNORE_INDEX), strict=True):
        row = inputs[b, : pos + 1]
        sep = int(np.flatnonzero(row == LIST_SEP)[0])
        end = sep + 1 + int(np.flatnonzero(np.isin(row[sep + 1 :], (PREFIX, ANSWER_SEP)))[0])
        (common,) = np.intersect1d(row[1:sep], row[sep + 1 : end])
        out[b, pos] = common
    return out


class SetDisjointnessSource(SyntheticSource):
    """Random-access set-disjointness data (grain ``RandomAccessDataSource`` protocol);
    ``src[i]`` is a pure function of ``(seed, i)``, right-padded to ``pad_to``."""

    task = "set_disjointness"
    config: SetDisjointnessConfig

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return set_disjointness_example(self.config, self.seed, index)
