"""Tests for the induction-heads generator: each trigger occurs once before its query, the
label is the token that followed it (brute force), determinism, chance and validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memarch.data.induction import (
    InductionConfig,
    InductionSource,
    chance_accuracy,
    induction_example,
    oracle_predictions,
)
from memarch.data.source import IGNORE_INDEX

BASE = InductionConfig(vocab_size=16, seq_len=64, num_triggers=3)


def check_example(cfg: InductionConfig, inputs: np.ndarray, targets: np.ndarray) -> None:
    p, n = cfg.prompt_len, cfg.num_triggers
    assert inputs.shape == targets.shape == (cfg.seq_len,)
    assert inputs.dtype == targets.dtype == np.int32
    assert inputs.min() >= 1 and inputs.max() < cfg.vocab_size
    labelled = np.flatnonzero(targets != IGNORE_INDEX)
    np.testing.assert_array_equal(labelled, np.arange(p, cfg.seq_len))
    assert len(set(inputs[p:].tolist())) == n  # every trigger asked once
    for q in labelled:
        trigger = inputs[q]
        earlier = [j for j in range(q) if inputs[j] == trigger]
        assert len(earlier) == 1 and earlier[0] < p - 1  # one occurrence, inside the prompt
        assert targets[q] == inputs[earlier[0] + 1]  # the token that followed it
        assert targets[q] not in inputs[p:]  # an answer is never a trigger


def test_one_answer_per_query():
    src = InductionSource(BASE, seed=3, num_examples=32)
    for i in range(len(src)):
        ex = src[i]
        check_example(BASE, ex["inputs"], ex["targets"])


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 6),
    extra_v=st.integers(0, 20),
    extra_l=st.integers(0, 40),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10**6),
)
def test_property_any_valid_slice(n, extra_v, extra_l, seed, index):
    cfg = InductionConfig(vocab_size=n + 3 + extra_v, seq_len=3 * n + extra_l, num_triggers=n)
    ex = InductionSource(cfg, seed=seed, num_examples=index + 1)[index]
    check_example(cfg, ex["inputs"], ex["targets"])
    pred = oracle_predictions(cfg, ex["inputs"][None], ex["targets"][None])
    np.testing.assert_array_equal(pred[0], ex["targets"])


def test_trigger_positions_cover_the_prompt():
    cfg = InductionConfig(vocab_size=16, seq_len=33, num_triggers=1)
    starts = [int(induction_example(cfg, 0, i)[2][0]) for i in range(400)]
    assert min(starts) == 0 and max(starts) == cfg.prompt_len - 2


def test_deterministic_and_seeds_differ():
    a, b = (InductionSource(BASE, seed=7, num_examples=8) for _ in range(2))
    c = InductionSource(BASE, seed=8, num_examples=8)
    for i in (5, 0, 5):
        np.testing.assert_array_equal(a[i]["inputs"], b[i]["inputs"])
        np.testing.assert_array_equal(a[i]["targets"], b[i]["targets"])
    assert all(not np.array_equal(a[i]["inputs"], c[i]["inputs"]) for i in range(8))


def test_chance():
    assert chance_accuracy(BASE) == 1 / 15


@pytest.mark.parametrize(
    "change,field",
    [
        ({"vocab_size": 5}, "vocab_size"),  # 3 triggers + 3
        ({"num_triggers": 0}, "num_triggers"),
        ({"seq_len": 8}, "seq_len"),  # < 3·3
        ({"seq_len": 64.0}, "seq_len"),
    ],
)
def test_validation_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(BASE, **change)
