"""Tests for the needle-in-a-haystack generator: determinism, the label is the needle's value,
depth placement, one answer per query, chance and oracle accuracy, validation."""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
import pytest

from memarch.data.config import DataConfig
from memarch.data.mqar import IGNORE_INDEX
from memarch.data.needle import (
    NUM_DIGITS,
    PASSKEY_MARKER,
    NeedleConfig,
    NeedleSource,
    chance_accuracy,
    needle_depth,
    needle_example,
)
from memarch.data.pipeline import eval_batches, prompt_len, train_dataset

BASE = NeedleConfig(vocab_size=64, seq_len=48, num_needles=3, value_len=2)


def oracle(inputs: np.ndarray, targets: np.ndarray, cfg: NeedleConfig) -> dict[int, int]:
    """Answer-reading predictor from ``inputs`` alone: at each labelled position, the token that
    followed the same (key + teacher-forced value prefix) in the haystack. Asserts uniqueness."""
    h, m = cfg.haystack_len, cfg.value_len
    answers = {}
    for pos in np.flatnonzero(targets != IGNORE_INDEX):
        slot_start = h + ((pos - h) // m) * m
        prefix = inputs[slot_start : pos + 1]
        found = {
            int(inputs[j + len(prefix)])
            for j in range(h - len(prefix))
            if np.array_equal(inputs[j : j + len(prefix)], prefix)
        }
        assert len(found) == 1, f"query at {pos} has answers {found}"
        answers[int(pos)] = found.pop()
    return answers


@pytest.mark.parametrize(
    "cfg",
    [
        BASE,
        NeedleConfig(vocab_size=32, seq_len=20, num_needles=1),
        NeedleConfig(vocab_size=64, seq_len=40, value_len=5, passkey=True),
        NeedleConfig(vocab_size=64, seq_len=40, value_len=3, depth=100.0),
    ],
)
def test_labels_are_needle_values_and_oracle_scores_one(cfg):
    src = NeedleSource(cfg, seed=3, num_examples=16)
    for i in range(len(src)):
        ex = src[i]
        inputs, targets = ex["inputs"], ex["targets"]
        assert inputs.shape == targets.shape == (cfg.seq_len,)
        assert inputs.dtype == targets.dtype == np.int32
        labelled = np.flatnonzero(targets != IGNORE_INDEX)
        np.testing.assert_array_equal(labelled, np.arange(cfg.haystack_len, cfg.seq_len))
        _, _, starts = needle_example(cfg, seed=3, index=i)
        values = {tuple(inputs[s + 1 : s + cfg.needle_len]) for s in starts}
        for q in range(cfg.haystack_len, cfg.seq_len, cfg.value_len):  # one slot per needle
            key = inputs[q]
            (s,) = [s for s in starts if inputs[s] == key]
            np.testing.assert_array_equal(
                targets[q : q + cfg.value_len], inputs[s + 1 : s + 1 + cfg.value_len]
            )
            assert tuple(targets[q : q + cfg.value_len]) in values
        answers = oracle(inputs, targets, cfg)
        pred = np.full(cfg.seq_len, -1)
        pred[list(answers)] = list(answers.values())
        mask = targets != IGNORE_INDEX
        assert np.mean(pred[mask] == targets[mask]) == 1.0
        if cfg.passkey:
            assert np.sum(inputs[: cfg.haystack_len] == PASSKEY_MARKER) == 1
            assert inputs[cfg.haystack_len] == PASSKEY_MARKER
            half = cfg.vocab_size // 2
            assert np.all((targets[mask] >= half) & (targets[mask] < half + NUM_DIGITS))


def test_deterministic_and_index_addressable():
    a = NeedleSource(BASE, seed=7, num_examples=8)
    b = NeedleSource(BASE, seed=7, num_examples=8)
    c = NeedleSource(BASE, seed=8, num_examples=8)
    for i in (5, 0, 5):
        np.testing.assert_array_equal(a[i]["inputs"], b[i]["inputs"])
        np.testing.assert_array_equal(a[i]["targets"], b[i]["targets"])
    assert any(not np.array_equal(a[i]["inputs"], c[i]["inputs"]) for i in range(8))
    assert not np.array_equal(a[0]["inputs"], a[1]["inputs"])
    batch = grain.MapDataset.source(a).batch(4)[1]
    np.testing.assert_array_equal(batch["inputs"][2], a[6]["inputs"])


@pytest.mark.parametrize("depth", [0.0, 25.0, 50.0, 100.0])
def test_depth_places_the_needle(depth):
    cfg = NeedleConfig(vocab_size=64, seq_len=64, value_len=2, depth=depth)
    h, n = cfg.haystack_len, cfg.needle_len
    want = round(depth / 100 * (h - n))
    for i in range(4):
        inputs, targets, starts = needle_example(cfg, seed=1, index=i)
        np.testing.assert_array_equal(starts, [want])
        key = inputs[h]
        assert np.flatnonzero(inputs[:h] == key).tolist() == [want]  # the key occurs once
        assert needle_depth(cfg, want) == pytest.approx(depth, abs=100 / (h - n))
    if depth == 100.0:
        assert want + n == h  # ends right before the query region


def test_drawn_depths_cover_the_haystack_without_overlap():
    cfg = NeedleConfig(vocab_size=64, seq_len=64, num_needles=2, value_len=3)
    depths = []
    for i in range(200):
        _, _, starts = needle_example(cfg, seed=0, index=i)
        assert np.all(np.diff(starts) >= cfg.needle_len) and starts[-1] + 4 <= cfg.haystack_len
        depths += [needle_depth(cfg, s) for s in starts]
    assert min(depths) < 10 and max(depths) > 90


def test_chance_accuracy():
    assert chance_accuracy(BASE) == 1 / 32
    assert chance_accuracy(NeedleConfig(vocab_size=64, seq_len=40, passkey=True)) == 0.1
    # a uniform guess over value tokens scores about chance
    src = NeedleSource(NeedleConfig(vocab_size=64, seq_len=24), seed=0, num_examples=2000)
    rng = np.random.default_rng(0)
    hits = [rng.integers(32, 64) == src[i]["targets"][-1] for i in range(len(src))]
    assert abs(np.mean(hits) - 1 / 32) < 0.015


def test_padding_and_pipeline():
    src = NeedleSource(BASE, seed=0, num_examples=2, pad_to=56)
    ex = src[1]
    assert ex["inputs"].shape == (56,) and np.all(ex["inputs"][48:] == 0)
    assert np.all(ex["targets"][48:] == IGNORE_INDEX)
    data = DataConfig(
        task="needle",
        vocab_size=64,
        train_slices=((32, 2), (24, 1)),
        eval_slices=((32, 2),),
        num_eval_examples=4,
        needle_value_len=2,
    )
    assert train_dataset(data, 4)[0]["inputs"].shape == (4, 32)
    (batch,) = list(eval_batches(data, 32, 2, 4))
    assert batch["inputs"].shape == (4, 32)
    assert prompt_len(data, 32, 2) == 32 - 4
    assert np.all(batch["targets"][:, :28] == IGNORE_INDEX)
    assert np.all(batch["targets"][:, 28:] != IGNORE_INDEX)


@pytest.mark.parametrize(
    "change,field",
    [
        ({"vocab_size": 8}, "vocab_size"),
        ({"seq_len": 10}, "seq_len"),
        ({"num_needles": 0}, "num_needles"),
        ({"value_len": 0}, "value_len"),
        ({"value_len": 1.5}, "value_len"),
        ({"depth": 101.0}, "depth"),
        ({"depth": float("nan")}, "depth"),
        ({"depth": 50.0}, "depth"),  # 3 needles
        ({"passkey": True}, "num_needles"),  # 3 needles
        ({"passkey": 1}, "passkey"),
    ],
)
def test_validation_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        NeedleSource(dataclasses.replace(BASE, **change), seed=0, num_examples=1)


def test_rejects_bad_source_arguments():
    with pytest.raises(ValueError, match="seed"):
        NeedleSource(BASE, seed=-1, num_examples=1)
    with pytest.raises(ValueError, match="num_examples"):
        NeedleSource(BASE, seed=0, num_examples=0)
    with pytest.raises(ValueError, match="pad_to"):
        NeedleSource(BASE, seed=0, num_examples=1, pad_to=10)
    with pytest.raises(IndexError):
        NeedleSource(BASE, seed=0, num_examples=1)[1]
    with pytest.raises(ValueError, match="passkey"):
        NeedleConfig(vocab_size=16, seq_len=40, passkey=True).validate()


@pytest.mark.parametrize("passkey", [True, False])
def test_16k_needles_sit_at_the_requested_depth(passkey):
    """Lengths up to 16k: the needle starts at round(depth·(H − n)) and the brute-force oracle
    (reading the inputs only) answers every query."""
    from memarch.data.needle import oracle_predictions

    for depth in (0.0, 37.5, 100.0):
        cfg = NeedleConfig(vocab_size=64, seq_len=16384, value_len=5, depth=depth, passkey=passkey)
        h, n = cfg.haystack_len, cfg.needle_len
        inputs, targets, starts = needle_example(cfg, seed=2, index=int(depth))
        assert starts.tolist() == [round(depth / 100 * (h - n))]
        assert np.flatnonzero(inputs[:h] == inputs[h]).tolist() == starts.tolist()
        assert needle_depth(cfg, int(starts[0])) == pytest.approx(depth, abs=100 / (h - n))
        pred = oracle_predictions(cfg, inputs[None], targets[None])[0]
        mask = targets != IGNORE_INDEX
        assert mask.sum() == 5 and np.array_equal(pred[mask], targets[mask])


def test_distractor_needles_are_placed_but_never_asked():
    """RULER multikey: N needles in the haystack, Q < N of them queried."""
    from memarch.data.needle import oracle_predictions

    cfg = NeedleConfig(vocab_size=64, seq_len=64, num_needles=4, value_len=2, num_queries=1)
    assert cfg.haystack_len == 62 and cfg.query_len == 2
    asked_which = set()
    for i in range(40):
        inputs, targets, starts = needle_example(cfg, seed=0, index=i)
        keys = inputs[starts]
        assert len(set(keys.tolist())) == 4  # four needles with distinct keys ...
        assert np.flatnonzero(targets != IGNORE_INDEX).tolist() == [62, 63]  # ... one asked
        (j,) = np.flatnonzero(keys == inputs[62])
        np.testing.assert_array_equal(targets[62:], inputs[starts[j] + 1 : starts[j] + 3])
        np.testing.assert_array_equal(
            oracle_predictions(cfg, inputs[None], targets[None])[0], targets
        )
        asked_which.add(int(j))
    assert asked_which == {0, 1, 2, 3}  # any needle may be the asked one
    # the default (all asked) stream is unchanged by the field
    full = dataclasses.replace(cfg, num_queries=None)
    assert full.num_asked == 4 and full.haystack_len == 56
    for bad in (0, 5, 1.0):
        with pytest.raises(ValueError, match="num_queries"):
            dataclasses.replace(cfg, num_queries=bad)
    data = DataConfig(
        task="needle", vocab_size=64, needle_value_len=2, needle_num_queries=1, num_eval_examples=3
    )
    (batch,) = list(eval_batches(data, 64, 4, 4))
    assert (batch["targets"] != IGNORE_INDEX).sum(1).tolist() == [2, 2, 2]
