"""Induction heads: after a trigger token, predict the token that followed it earlier.

Reference: the induction-heads task of Mamba (Gu & Dao, arXiv 2312.00752, §4.1.2; vocabulary
16, train length 256, test up to 2^20) and Olsson et al. (2022); summarised in
``docs/recall_tasks.md`` §Induction. ``num_triggers = 1`` is Mamba's task (one trigger,
one query at the end); more triggers ask several such questions of one sequence.

Layout
------
With vocabulary ``V``, length ``L`` and ``n`` triggers:

* every token of ``[1, V)`` can occur (0 is only padding); each example draws ``n`` distinct
  **trigger** tokens from ``[1, V)``; the other ``V − 1 − n`` tokens form the alphabet of the
  **haystack** and of the **answers**;
* the **prompt** is positions ``[0, P)``, ``P = L − n``: uniform haystack tokens, with trigger
  ``t_j`` written once at a position ``s_j`` and followed by its answer ``a_j = inputs[s_j+1]``
  (a haystack token drawn uniformly); the ``n`` two-token spans ``t_j a_j`` never overlap and
  are placed uniformly (sorted offsets in ``[0, P − 2n]`` plus ``2j``, then shuffled over the
  triggers), so each trigger occurs exactly once in the prompt;
* the **query region** ``[P, L)`` lists the ``n`` triggers once each, in random order; the
  target at the position of ``t_j`` is ``a_j`` (the answer is never an input there, as in
  MQAR); ``targets`` is ``IGNORE_INDEX`` everywhere else. Every query has one correct answer:
  the token that followed the trigger's only earlier occurrence.

Worked example (``V=8, L=10, n=1``; trigger 3 at position 4, answer 6: ``P = 9``)::

    position  0    1    2    3    4    5    6    7    8    9
    inputs    5    2    7    2    3    6    1    5    4    3
    targets -100 -100 -100 -100 -100 -100 -100 -100 -100   6

Each example is a pure function of ``(seed, index)`` (its own
``np.random.default_rng([seed, index])``), so the source is random-access.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral

import numpy as np

from memarch.data.source import IGNORE_INDEX, SyntheticSource


@dataclasses.dataclass(frozen=True)
class InductionConfig:
    """One induction slice ``(V, L, n)``; see the module docstring for the layout."""

    vocab_size: int  # V: tokens [1, V) (0 is padding only)
    seq_len: int  # L = prompt (L − n) + n queries
    num_triggers: int = 1  # n distinct triggers, each queried once at the end

    @property
    def prompt_len(self) -> int:
        """Length ``P = L − n`` of the prompt (haystack with the trigger–answer spans)."""
        return self.seq_len - self.num_triggers

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ``ValueError`` naming the offending field and the accepted values."""
        for name in ("vocab_size", "seq_len", "num_triggers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise ValueError(f"{name} must be an int; got {value!r}")
        if self.num_triggers < 1:
            raise ValueError(f"num_triggers must be >= 1; got {self.num_triggers}")
        need_v = self.num_triggers + 3
        if self.vocab_size < need_v:
            raise ValueError(
                f"vocab_size must be >= num_triggers + 3 = {need_v} (padding 0, the triggers "
                f"and >= 2 other tokens); got {self.vocab_size}"
            )
        need = 3 * self.num_triggers
        if self.seq_len < need:
            raise ValueError(
                f"seq_len must be >= 3·num_triggers = {need} (a trigger–answer span and a query "
                f"per trigger); got {self.seq_len}"
            )


def answer_tokens(config: InductionConfig) -> np.ndarray:
    """The candidate answers ``[1, V)`` (int32): every label is one of them."""
    return np.arange(1, config.vocab_size, dtype=np.int32)


def chance_accuracy(config: InductionConfig) -> float:
    """Chance accuracy ``1 / (V − 1)``: a uniform guess among the tokens ``[1, V)``.

    (A guess that knows the triggers are never answers scores ``1 / (V − 1 − n)``.)
    """
    config.validate()
    return 1.0 / (config.vocab_size - 1)


def induction_example(
    config: InductionConfig, seed: int, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Example ``index`` of stream ``seed``: ``(inputs int32[L], targets int32[L],
    starts int64[n])``, ``starts[j]`` the prompt position of trigger ``j``.

    Assumes ``config`` and ``seed`` are valid and ``index >= 0``.
    """
    v, n, p = config.vocab_size, config.num_triggers, config.prompt_len
    rng = np.random.default_rng([seed, index])
    triggers = 1 + rng.choice(v - 1, size=n, replace=False)
    alphabet = np.setdiff1d(np.arange(1, v), triggers)
    inputs = np.empty(config.seq_len, np.int32)
    inputs[:p] = rng.choice(alphabet, size=p)
    offsets = np.sort(rng.integers(0, p - 2 * n + 1, size=n)) + 2 * np.arange(n)
    starts = rng.permutation(offsets)
    inputs[starts] = triggers
    answers = inputs[starts + 1]
    order = rng.permutation(n)
    inputs[p:] = triggers[order]
    targets = np.full(config.seq_len, IGNORE_INDEX, np.int32)
    targets[p:] = answers[order]
    return inputs, targets, starts


def oracle_predictions(
    config: InductionConfig, inputs: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Answers read from ``inputs [B, L]`` alone: at each labelled position, the token that
    followed the first earlier occurrence of the current token. Returns ``int32 [B, L]``."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    out = np.full(targets.shape, IGNORE_INDEX, np.int32)
    for b, pos in zip(*np.nonzero(targets != IGNORE_INDEX), strict=True):
        (earlier,) = np.nonzero(inputs[b, :pos] == inputs[b, pos])
        out[b, pos] = inputs[b, earlier[0] + 1]
    return out


class InductionSource(SyntheticSource):
    """Random-access induction-heads data (grain ``RandomAccessDataSource`` protocol);
    ``src[i]`` is a pure function of ``(seed, i)``, right-padded to ``pad_to``."""

    task = "induction"
    config: InductionConfig

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets, _ = induction_example(self.config, self.seed, index)
        return inputs, targets
