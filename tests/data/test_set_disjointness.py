"""Tests for the JRT set-disjointness generator: layout, exactly one shared token (brute force),
both orders, determinism, chance and validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memarch.data.set_disjointness import (
    ANSWER_SEP,
    FIRST_ITEM,
    LIST_SEP,
    PREFIX,
    SetDisjointnessConfig,
    SetDisjointnessSource,
    chance_accuracy,
    oracle_predictions,
    set_disjointness_example,
)
from memarch.data.source import IGNORE_INDEX

SHORT_FIRST = SetDisjointnessConfig(vocab_size=64, first_len=4, second_len=16)
LONG_FIRST = SetDisjointnessConfig(vocab_size=64, first_len=16, second_len=4)


def check_example(cfg: SetDisjointnessConfig, inputs: np.ndarray, targets: np.ndarray) -> None:
    a, b = cfg.first_len, cfg.second_len
    assert inputs.shape == targets.shape == (a + b + 3,) == (cfg.seq_len,)
    assert inputs.dtype == targets.dtype == np.int32
    assert inputs[0] == PREFIX and inputs[a + 1] == LIST_SEP and inputs[-1] == ANSWER_SEP
    first, second = inputs[1 : a + 1], inputs[a + 2 : -1]
    assert first.min() >= FIRST_ITEM and second.min() >= FIRST_ITEM
    assert len(set(first.tolist())) == a and len(set(second.tolist())) == b  # distinct items
    shared = [x for x in first.tolist() if x in second.tolist()]  # brute force
    assert len(shared) == 1  # exactly one common token: one correct answer
    assert np.flatnonzero(targets != IGNORE_INDEX).tolist() == [cfg.seq_len - 1]
    assert targets[-1] == shared[0]


@pytest.mark.parametrize(
    "cfg", [SHORT_FIRST, LONG_FIRST, dataclasses.replace(SHORT_FIRST, second_len=4)]
)
def test_layout_and_one_shared_token(cfg):
    src = SetDisjointnessSource(cfg, seed=1, num_examples=32)
    for i in range(len(src)):
        ex = src[i]
        check_example(cfg, ex["inputs"], ex["targets"])
    assert cfg.short_first == (cfg.first_len < cfg.second_len)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    a=st.integers(1, 20),
    b=st.integers(1, 20),
    extra_v=st.integers(0, 20),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10**6),
)
def test_property_any_valid_slice(a, b, extra_v, seed, index):
    cfg = SetDisjointnessConfig(
        vocab_size=2 * max(a, b) + FIRST_ITEM + extra_v, first_len=a, second_len=b
    )
    ex = SetDisjointnessSource(cfg, seed=seed, num_examples=index + 1)[index]
    check_example(cfg, ex["inputs"], ex["targets"])
    pred = oracle_predictions(cfg, ex["inputs"][None], ex["targets"][None])
    np.testing.assert_array_equal(pred[0], ex["targets"])


def test_the_shared_slot_is_in_the_longer_list_anywhere():
    """The overwritten slot moves around the long list, whichever order the lists come in."""
    for cfg in (SHORT_FIRST, LONG_FIRST):
        src = SetDisjointnessSource(cfg, seed=0, num_examples=300)
        long_start = cfg.first_len + 2 if cfg.short_first else 1
        slots = set()
        for i in range(len(src)):
            ex = src[i]
            long_list = ex["inputs"][long_start : long_start + 16]
            slots.add(int(np.flatnonzero(long_list == ex["targets"][-1])[0]))
        assert slots == set(range(16))


def test_deterministic_and_seeds_differ():
    a, b = (SetDisjointnessSource(SHORT_FIRST, seed=7, num_examples=8) for _ in range(2))
    c = SetDisjointnessSource(SHORT_FIRST, seed=8, num_examples=8)
    for i in (5, 0, 5):
        np.testing.assert_array_equal(a[i]["inputs"], b[i]["inputs"])
    assert all(not np.array_equal(a[i]["inputs"], c[i]["inputs"]) for i in range(8))


def test_chance_and_padding():
    assert chance_accuracy(SHORT_FIRST) == 1 / 60
    ex = SetDisjointnessSource(SHORT_FIRST, seed=0, num_examples=1, pad_to=30)[0]
    assert ex["inputs"].shape == (30,) and np.all(ex["targets"][23:] == IGNORE_INDEX)


@pytest.mark.parametrize(
    "change,field",
    [
        ({"vocab_size": 35}, "vocab_size"),  # halves of 31 tokens < 16
        ({"first_len": 0}, "first_len"),
        ({"second_len": -1}, "second_len"),
        ({"second_len": 4.0}, "second_len"),
    ],
)
def test_validation_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SHORT_FIRST, **change)


@pytest.mark.parametrize("a,b", [(3, 9), (9, 3)])
def test_repeated_context_reads_the_lists_twice(a, b):
    """num_passes = 2 (JRT): the context "[1] first [2] second" appears twice, verbatim, before
    the answer separator; the label and the oracle are unchanged."""
    one = SetDisjointnessConfig(vocab_size=64, first_len=a, second_len=b)
    two = dataclasses.replace(one, num_passes=2)
    x1, y1 = set_disjointness_example(one, 3, 7)
    x2, y2 = set_disjointness_example(two, 3, 7)
    ctx = x1[:-1]
    assert two.seq_len == 2 * len(ctx) + 1 == len(x2)
    np.testing.assert_array_equal(x2, np.concatenate([ctx, ctx, x1[-1:]]))
    assert y2[-1] == y1[-1] and (y2[:-1] == IGNORE_INDEX).all()
    pred = oracle_predictions(two, x2[None], y2[None])
    assert pred[0, -1] == y2[-1]
    with pytest.raises(ValueError, match="num_passes"):
        dataclasses.replace(one, num_passes=0)
