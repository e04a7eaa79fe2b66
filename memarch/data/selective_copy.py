"""Selective copying: reproduce, in order, the data tokens scattered among noise.

Reference: the selective-copying task of Mamba (Gu & Dao, arXiv 2312.00752, §3.1 / Fig. 2),
reduced to tokens (``docs/recall_tasks.md`` §Selective copying; Mamba's setting: vocabulary
16, length 4096, 16 data tokens).

Layout
------
With vocabulary ``V``, length ``L`` and ``n`` data tokens:

* token 0 is noise, token 1 (``COPY_MARKER``) asks for the copy, and data tokens come from
  ``[2, V)`` (drawn uniformly, **with** replacement, as in Mamba);
* the **prompt** is positions ``[0, P)``, ``P = L − n``: the ``n`` data tokens sit at ``n``
  distinct positions of ``[0, P − 1)`` drawn uniformly (kept in increasing order), every other
  prompt position is noise, and position ``P − 1`` is the copy marker;
* the **answer region** ``[P, L)`` holds the data tokens ``d_1 … d_n`` as inputs (teacher
  forcing); the target at position ``P − 1 + j`` is ``d_(j+1)`` for ``j = 0 … n − 1`` (the
  marker predicts the first data token, data token ``j`` the next one); ``targets`` is
  ``IGNORE_INDEX`` everywhere else (the last position included). The ``j``-th labelled
  position has exactly one correct answer: the ``j``-th non-noise token of the prompt.

Worked example (``V=8, L=10, n=3``; data ``(5, 2, 5)`` at prompt positions ``(1, 2, 5)``:
``P = 7``, the marker at 6)::

    position  0    1    2    3    4    5    6    7    8    9
    inputs    0    5    2    0    0    5    1    5    2    5
    targets -100 -100 -100 -100 -100 -100   5    2    5 -100

Each example is a pure function of ``(seed, index)`` (its own
``np.random.default_rng([seed, index])``), so the source is random-access.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral

import numpy as np

from memarch.data.source import IGNORE_INDEX, SyntheticSource

NOISE = 0  # the blank token between data tokens
COPY_MARKER = 1  # "now copy the data tokens"
FIRST_DATA = 2  # data tokens are [FIRST_DATA, V)


@dataclasses.dataclass(frozen=True)
class SelectiveCopyConfig:
    """One selective-copying slice ``(V, L, n)``; see the module docstring for the layout."""

    vocab_size: int  # V: 0 noise, 1 copy marker, data tokens in [2, V)
    seq_len: int  # L = prompt (L − n, marker last) + n answer positions
    num_tokens: int  # n data tokens to copy, in order

    @property
    def prompt_len(self) -> int:
        """Length ``P = L − n`` of the prompt (noise, data tokens and the final marker)."""
        return self.seq_len - self.num_tokens

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ``ValueError`` naming the offending field and the accepted values."""
        for name in ("vocab_size", "seq_len", "num_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise ValueError(f"{name} must be an int; got {value!r}")
        if self.vocab_size < FIRST_DATA + 2:
            raise ValueError(
                f"vocab_size must be >= {FIRST_DATA + 2} (noise, marker and >= 2 data tokens); "
                f"got {self.vocab_size}"
            )
        if self.num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1; got {self.num_tokens}")
        need = 2 * self.num_tokens + 1
        if self.seq_len < need:
            raise ValueError(
                f"seq_len must be >= 2·num_tokens + 1 = {need} (data tokens, marker, answers); "
                f"got {self.seq_len}"
            )


def answer_tokens(config: SelectiveCopyConfig) -> np.ndarray:
    """The candidate answers ``[2, V)`` (int32): every label is one of them."""
    return np.arange(FIRST_DATA, config.vocab_size, dtype=np.int32)


def chance_accuracy(config: SelectiveCopyConfig) -> float:
    """Chance accuracy ``1 / (V − 2)``: a uniform guess among the data tokens."""
    config.validate()
    return 1.0 / (config.vocab_size - FIRST_DATA)


def selective_copy_example(
    config: SelectiveCopyConfig, seed: int, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Example ``index`` of stream ``seed`` as ``(inputs int32[L], targets int32[L])``.

    Assumes ``config`` and ``seed`` are valid and ``index >= 0``.
    """
    n, p = config.num_tokens, config.prompt_len
    rng = np.random.default_rng([seed, index])
    data = rng.integers(FIRST_DATA, config.vocab_size, size=n).astype(np.int32)
    where = np.sort(rng.choice(p - 1, size=n, replace=False))
    inputs = np.full(config.seq_len, NOISE, np.int32)
    inputs[where] = data
    inputs[p - 1] = COPY_MARKER
    inputs[p:] = data
    targets = np.full(config.seq_len, IGNORE_INDEX, np.int32)
    targets[p - 1 : config.seq_len - 1] = data
    return inputs, targets


def oracle_predictions(
    config: SelectiveCopyConfig, inputs: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Answers read from ``inputs [B, L]`` alone: the ``j``-th labelled position (in the mask
    ``targets != IGNORE_INDEX``) gets the ``j``-th non-noise token before the marker.
    Returns ``int32 [B, L]`` (``IGNORE_INDEX`` off the mask)."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    out = np.full(targets.shape, IGNORE_INDEX, np.int32)
    for b in range(inputs.shape[0]):
        marker = int(np.flatnonzero(inputs[b] == COPY_MARKER)[0])
        prompt = inputs[b, :marker]
        data = prompt[prompt != NOISE]
        pos = np.flatnonzero(targets[b] != IGNORE_INDEX)
        out[b, pos] = data[: len(pos)]
    return out


class SelectiveCopySource(SyntheticSource):
    """Random-access selective-copying data (grain ``RandomAccessDataSource`` protocol);
    ``src[i]`` is a pure function of ``(seed, i)``, right-padded to ``pad_to``."""

    task = "selective_copy"
    config: SelectiveCopyConfig

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return selective_copy_example(self.config, self.seed, index)
