"""Tests for the selective-copying generator: layout, one answer per query (brute force),
determinism, chance, padding and validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memarch.data.selective_copy import (
    COPY_MARKER,
    FIRST_DATA,
    NOISE,
    SelectiveCopyConfig,
    SelectiveCopySource,
    chance_accuracy,
    oracle_predictions,
)
from memarch.data.source import IGNORE_INDEX

BASE = SelectiveCopyConfig(vocab_size=16, seq_len=40, num_tokens=6)


def brute_force_answers(inputs: np.ndarray) -> list[int]:
    """The non-noise tokens before the marker, scanned one by one (independent of the code)."""
    out = []
    for tok in inputs:
        if tok == COPY_MARKER:
            return out
        if tok != NOISE:
            out.append(int(tok))
    raise AssertionError("no copy marker")


def check_example(cfg: SelectiveCopyConfig, inputs: np.ndarray, targets: np.ndarray) -> None:
    n, p = cfg.num_tokens, cfg.prompt_len
    assert inputs.shape == targets.shape == (cfg.seq_len,)
    assert inputs.dtype == targets.dtype == np.int32
    assert np.sum(inputs == COPY_MARKER) == 1 and inputs[p - 1] == COPY_MARKER
    data = brute_force_answers(inputs)
    assert len(data) == n  # exactly n data tokens in the prompt
    assert all(FIRST_DATA <= d < cfg.vocab_size for d in data)
    labelled = np.flatnonzero(targets != IGNORE_INDEX)
    np.testing.assert_array_equal(labelled, np.arange(p - 1, cfg.seq_len - 1))
    np.testing.assert_array_equal(targets[labelled], data)  # the j-th query: the j-th token
    np.testing.assert_array_equal(inputs[p:], data)  # teacher forcing


def test_layout_and_one_answer_per_query():
    src = SelectiveCopySource(BASE, seed=3, num_examples=32)
    for i in range(len(src)):
        ex = src[i]
        check_example(BASE, ex["inputs"], ex["targets"])


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    v=st.integers(4, 40),
    n=st.integers(1, 12),
    extra=st.integers(0, 30),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10**6),
)
def test_property_any_valid_slice(v, n, extra, seed, index):
    cfg = SelectiveCopyConfig(vocab_size=v, seq_len=2 * n + 1 + extra, num_tokens=n)
    ex = SelectiveCopySource(cfg, seed=seed, num_examples=index + 1)[index]
    check_example(cfg, ex["inputs"], ex["targets"])
    pred = oracle_predictions(cfg, ex["inputs"][None], ex["targets"][None])
    np.testing.assert_array_equal(pred[0], ex["targets"])


def test_data_positions_are_spread_over_the_prompt():
    src = SelectiveCopySource(BASE, seed=0, num_examples=300)
    where = np.concatenate(
        [np.flatnonzero(src[i]["inputs"][: BASE.prompt_len - 1]) for i in range(300)]
    )
    assert where.min() == 0 and where.max() == BASE.prompt_len - 2


def test_deterministic_and_seeds_differ():
    a, b = (SelectiveCopySource(BASE, seed=7, num_examples=8) for _ in range(2))
    c = SelectiveCopySource(BASE, seed=8, num_examples=8)
    for i in (5, 0, 5):
        np.testing.assert_array_equal(a[i]["inputs"], b[i]["inputs"])
        np.testing.assert_array_equal(a[i]["targets"], b[i]["targets"])
    assert all(not np.array_equal(a[i]["inputs"], c[i]["inputs"]) for i in range(8))


def test_chance_and_padding():
    assert chance_accuracy(BASE) == 1 / 14
    ex = SelectiveCopySource(BASE, seed=0, num_examples=1, pad_to=48)[0]
    assert ex["inputs"].shape == (48,) and np.all(ex["inputs"][40:] == 0)
    assert np.all(ex["targets"][40:] == IGNORE_INDEX)
    check_example(BASE, ex["inputs"][:40], ex["targets"][:40])


@pytest.mark.parametrize(
    "change,field",
    [
        ({"vocab_size": 3}, "vocab_size"),
        ({"num_tokens": 0}, "num_tokens"),
        ({"num_tokens": 2.0}, "num_tokens"),
        ({"seq_len": 12}, "seq_len"),  # < 2·6 + 1
        ({"seq_len": True}, "seq_len"),
    ],
)
def test_validation_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(BASE, **change)
