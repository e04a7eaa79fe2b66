"""Tests for the MQAR generator: layout, one answer per query, determinism, validation."""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memarch.data.mqar import (
    IGNORE_INDEX,
    MQARConfig,
    MQARSource,
    chance_accuracy,
    mqar_batch,
)

BASE = MQARConfig(vocab_size=64, seq_len=64, num_pairs=4)


def oracle_answers(inputs: np.ndarray, targets: np.ndarray, cfg: MQARConfig) -> dict[int, int]:
    """Brute force: for each labelled position, the value that last follows that key in the
    context (latest-value semantics).

    Parses ``inputs`` only (targets give just the positions). Returns ``{pos: answer}``; asserts
    that a key is assigned at most two distinct values, the second only with overwrites.
    """
    ctx = cfg.context_len
    answers = {}
    for pos in np.flatnonzero(targets != IGNORE_INDEX):
        key = inputs[pos]
        found = [int(inputs[j + 1]) for j in range(0, ctx, 2) if inputs[j] == key]
        assert found, f"query at {pos} (key {key}) has no answer in the context"
        assert len(set(found)) <= (2 if cfg.num_overwrites else 1), (pos, found)
        answers[int(pos)] = found[-1]
    return answers


def check_example(inputs: np.ndarray, targets: np.ndarray, cfg: MQARConfig) -> None:
    """Every structural property of one unpadded example."""
    v, n, p, ctx = cfg.vocab_size, cfg.num_pairs, cfg.num_passes, cfg.context_len
    r = cfg.num_overwrites
    assert inputs.shape == targets.shape == (cfg.seq_len,)
    assert inputs.dtype == targets.dtype == np.int32
    # Context: one 2N block repeated exactly P times, then R re-assignments.
    block = inputs[: 2 * n]
    np.testing.assert_array_equal(inputs[: 2 * n * p], np.tile(block, p))
    keys, values = block[0::2], block[1::2]
    assert len(set(keys.tolist())) == n and len(set(values.tolist())) == n
    re_keys, re_values = inputs[2 * n * p : ctx : 2], inputs[2 * n * p + 1 : ctx : 2]
    assert len(re_keys) == r and len(set(re_keys.tolist())) == r
    assert set(re_keys.tolist()) <= set(keys.tolist())  # re-assigned keys are earlier keys
    assert len(set(re_values.tolist()) | set(values.tolist())) == n + r  # fresh values
    assert np.all(re_values >= v // 2)
    assert np.all((keys >= 1) & (keys < v // 2))
    assert np.all((values >= v // 2) & (values < v))
    # Labels: exactly N, only in the query region, at even offsets, one per key.
    pos = np.flatnonzero(targets != IGNORE_INDEX)
    assert pos.size == n
    assert np.all(pos >= ctx) and np.all((pos - ctx) % 2 == 0)
    assert sorted(inputs[pos].tolist()) == sorted(keys.tolist())
    # Each labelled target is the (unique) value the oracle finds for that key.
    answers = oracle_answers(inputs, targets, cfg)
    assert all(targets[q] == a for q, a in answers.items())
    assert np.all(inputs >= 0) and np.all(inputs < v)
    if not cfg.random_non_queries:
        # The query region holds the query keys and filler 0 only.
        region = np.zeros(cfg.seq_len, bool)
        region[ctx:] = True
        assert np.all(inputs[region & (targets == IGNORE_INDEX)] == 0)


def test_structure_on_typical_slice():
    # Exhaustive structural check on many examples of a typical slice.
    src = MQARSource(BASE, seed=0, num_examples=200)
    for i in range(len(src)):
        ex = src[i]
        check_example(ex["inputs"], ex["targets"], BASE)


def test_value_is_not_an_input_token_in_query_region():
    # Zoology semantics: the slot after a query key is filler; the value is only a target.
    ex = MQARSource(BASE, seed=3, num_examples=1)[0]
    pos = np.flatnonzero(ex["targets"] != IGNORE_INDEX)
    after = pos[pos + 1 < BASE.seq_len] + 1
    assert np.all(ex["inputs"][after] == 0)


def test_chance_accuracy():
    assert chance_accuracy(BASE) == pytest.approx(1 / 32)
    assert chance_accuracy(dataclasses.replace(BASE, vocab_size=65)) == pytest.approx(1 / 33)


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_num_passes_tiles_context(passes):
    cfg = MQARConfig(vocab_size=64, seq_len=64, num_pairs=4, num_passes=passes)
    batch = mqar_batch(cfg, seed=1, indices=range(20))
    n = cfg.num_pairs
    for x, y in zip(batch["inputs"], batch["targets"], strict=True):
        check_example(x, y, cfg)
        blocks = x[: 2 * n * passes].reshape(passes, 2 * n)
        assert np.all(blocks == blocks[0])
        # The block does not continue past P copies: the query region starts right after.
        assert np.all(np.flatnonzero(y != IGNORE_INDEX) >= 2 * n * passes)


def test_random_non_queries():
    cfg = dataclasses.replace(BASE, random_non_queries=True)
    batch = mqar_batch(cfg, seed=0, indices=range(50))
    for x, y in zip(batch["inputs"], batch["targets"], strict=True):
        check_example(x, y, cfg)
    region = batch["inputs"][:, cfg.context_len :]
    assert np.mean(region != 0) > 0.9  # filler is random, not 0
    # Filler is uniform over the whole vocabulary [0, V): ~2,800 draws cover all 64 tokens.
    filler = region[batch["targets"][:, cfg.context_len :] == IGNORE_INDEX]
    assert set(np.unique(filler).tolist()) == set(range(cfg.vocab_size))
    # Same keys, values and query positions as without random filler.
    plain = mqar_batch(BASE, seed=0, indices=range(50))
    np.testing.assert_array_equal(plain["targets"], batch["targets"])
    np.testing.assert_array_equal(
        plain["inputs"][:, : cfg.context_len], batch["inputs"][:, : cfg.context_len]
    )


def test_determinism_and_seeds():
    a = MQARSource(BASE, seed=7, num_examples=10)
    b = MQARSource(BASE, seed=7, num_examples=10)
    c = MQARSource(BASE, seed=8, num_examples=10)
    for i in range(10):
        np.testing.assert_array_equal(a[i]["inputs"], b[i]["inputs"])
        np.testing.assert_array_equal(a[i]["targets"], b[i]["targets"])
    stack = lambda s: np.stack([s[i]["inputs"] for i in range(10)])
    assert not np.array_equal(stack(a), stack(c))
    # Different indices differ too (not one example repeated).
    assert len({a[i]["inputs"].tobytes() for i in range(10)}) == 10
    # Access order does not matter.
    np.testing.assert_array_equal(
        a[9]["inputs"], MQARSource(BASE, seed=7, num_examples=10)[9]["inputs"]
    )


def test_getitem_equals_batch_row():
    src = MQARSource(BASE, seed=5, num_examples=30)
    idx = [3, 0, 29, 17, 3]
    batch = mqar_batch(BASE, seed=5, indices=idx)
    assert batch["inputs"].shape == batch["targets"].shape == (5, BASE.seq_len)
    for row, i in enumerate(idx):
        np.testing.assert_array_equal(batch["inputs"][row], src[i]["inputs"])
        np.testing.assert_array_equal(batch["targets"][row], src[i]["targets"])
    empty = mqar_batch(BASE, seed=5, indices=[])
    assert empty["inputs"].shape == (0, BASE.seq_len)


def test_index_errors():
    src = MQARSource(BASE, seed=0, num_examples=5)
    assert len(src) == 5
    src[np.int64(4)]  # numpy ints are fine
    for bad in (-1, 5, 100):
        with pytest.raises(IndexError):
            src[bad]
    with pytest.raises(IndexError):
        mqar_batch(BASE, seed=0, indices=[0, -1])


def test_power_law_puts_queries_early():
    cfg = MQARConfig(vocab_size=256, seq_len=128, num_pairs=4)  # 60 slots
    slots = {}
    for a in (0.01, 1.0):
        y = mqar_batch(dataclasses.replace(cfg, power_a=a), seed=0, indices=range(300))["targets"]
        _, pos = np.nonzero(y != IGNORE_INDEX)
        slots[a] = (pos - cfg.context_len) / 2
    # Uniform without replacement: mean slot (S − 1)/2 = 29.5, sd of the mean ≈ 0.6.
    assert abs(slots[1.0].mean() - 29.5) < 3
    # a = 0.01 (p ∝ ~1/i): mean slot ≈ 14; margin of > 10 slots.
    assert slots[0.01].mean() < slots[1.0].mean() - 10
    assert np.mean(slots[0.01] == 0) > 0.1  # the first slot is the most likely one


def test_pad_to():
    src = MQARSource(BASE, seed=2, num_examples=4, pad_to=80)
    plain = MQARSource(BASE, seed=2, num_examples=4)
    ex = src[1]
    assert ex["inputs"].shape == ex["targets"].shape == (80,)
    assert ex["inputs"].dtype == ex["targets"].dtype == np.int32
    np.testing.assert_array_equal(ex["inputs"][:64], plain[1]["inputs"])
    np.testing.assert_array_equal(ex["targets"][:64], plain[1]["targets"])
    assert np.all(ex["inputs"][64:] == 0) and np.all(ex["targets"][64:] == IGNORE_INDEX)
    assert MQARSource(BASE, seed=2, num_examples=4, pad_to=64)[0]["inputs"].shape == (64,)
    with pytest.raises(ValueError, match="pad_to"):
        MQARSource(BASE, seed=2, num_examples=4, pad_to=63)


def test_grain_batch_mixes_slices():
    short = MQARConfig(vocab_size=64, seq_len=32, num_pairs=2)
    ds = grain.MapDataset.source(MQARSource(short, seed=0, num_examples=10, pad_to=64)).batch(4)
    assert len(ds) == 3
    first = ds[0]
    assert first["inputs"].shape == first["targets"].shape == (4, 64)
    direct = mqar_batch(short, seed=0, indices=range(4))
    np.testing.assert_array_equal(first["inputs"][:, :32], direct["inputs"])
    np.testing.assert_array_equal(first["targets"][:, :32], direct["targets"])
    assert ds[2]["inputs"].shape == (2, 64)  # remainder kept
    # Mixing two slices of different L in one grain pipeline.
    long = MQARSource(BASE, seed=0, num_examples=4, pad_to=64)
    mixed = grain.MapDataset.mix(
        [
            grain.MapDataset.source(MQARSource(short, seed=0, num_examples=4, pad_to=64)),
            grain.MapDataset.source(long),
        ]
    ).batch(4)
    assert mixed[0]["inputs"].shape == (4, 64)


@st.composite
def configs(draw):
    n = draw(st.integers(1, 8))
    p = draw(st.integers(1, 3))
    r = draw(st.integers(0, n))
    v = draw(st.integers(2 * (n + r) + 2, 2 * (n + r) + 40))
    slots = draw(st.integers(n, n + 12))
    return MQARConfig(
        vocab_size=v,
        seq_len=2 * n * p + 2 * r + 2 * slots,
        num_overwrites=r,
        num_pairs=n,
        power_a=draw(st.sampled_from([0.01, 0.3, 1.0, 2.5, 50.0])),
        num_passes=p,
        random_non_queries=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None)
@given(cfg=configs(), seed=st.integers(0, 2**32), index=st.integers(0, 10**6))
def test_property_random_configs(cfg, seed, index):
    ex = MQARSource(cfg, seed=seed, num_examples=index + 1)[index]
    check_example(ex["inputs"], ex["targets"], cfg)


def test_forgetting_mqar_labels_the_latest_value():
    cfg = MQARConfig(vocab_size=64, seq_len=64, num_pairs=6, num_overwrites=3)
    for i in range(10):
        ex = MQARSource(cfg, seed=1, num_examples=10)[i]
        check_example(ex["inputs"], ex["targets"], cfg)
        inputs, targets = ex["inputs"], ex["targets"]
        first = dict(zip(inputs[0:12:2].tolist(), inputs[1:12:2].tolist(), strict=True))
        latest = dict(zip(inputs[12:18:2].tolist(), inputs[13:18:2].tolist(), strict=True))
        for pos in np.flatnonzero(targets != IGNORE_INDEX):
            key = int(inputs[pos])
            assert targets[pos] == latest.get(key, first[key])
        # exactly 3 of the 6 queries are answered by a value that is not the first one
        stale = [targets[q] != first[int(inputs[q])] for q in np.flatnonzero(targets >= 0)]
        assert sum(stale) == 3


def test_boundary_config_fills_every_slot():
    # 2NP + 2N == L: every slot holds a query, for any power_a.
    cfg = MQARConfig(vocab_size=10, seq_len=16, num_pairs=4, num_passes=1, power_a=0.01)
    for i in range(20):
        ex = MQARSource(cfg, seed=0, num_examples=20)[i]
        check_example(ex["inputs"], ex["targets"], cfg)
        assert np.all(ex["targets"][8::2] != IGNORE_INDEX)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"vocab_size": 9}, "vocab_size"),  # V//2 − 1 = 3 < 4 keys
        ({"vocab_size": 7, "num_pairs": 3}, "vocab_size"),  # keys 1..2 only
        ({"vocab_size": 64.0}, "vocab_size"),
        ({"seq_len": 63}, "seq_len"),
        ({"seq_len": 0}, "seq_len"),
        ({"seq_len": -4}, "seq_len"),
        ({"seq_len": 14}, "seq_len"),  # need 2·4 + 2·4 = 16
        ({"seq_len": 20, "num_passes": 2}, "seq_len"),  # need 2·4·2 + 8 = 24
        ({"num_pairs": 0}, "num_pairs"),
        ({"num_pairs": -1}, "num_pairs"),
        ({"power_a": 0.0}, "power_a"),
        ({"power_a": -1.0}, "power_a"),
        ({"power_a": float("nan")}, "power_a"),
        ({"num_passes": 0}, "num_passes"),
        ({"num_overwrites": 5}, "num_overwrites"),  # more than num_pairs
        ({"num_overwrites": -1}, "num_overwrites"),
        ({"num_overwrites": 1, "seq_len": 16}, "seq_len"),  # need 8 + 2 + 8 = 18
        ({"num_overwrites": 2, "seq_len": 32}, "vocab_size"),  # 5 values < 4 + 2
    ],
)
def test_validation_errors(changes, field):
    cfg = dataclasses.replace(MQARConfig(vocab_size=10, seq_len=16, num_pairs=4), **changes)
    with pytest.raises(ValueError, match=field):
        cfg.validate()
    with pytest.raises(ValueError, match=field):
        MQARSource(cfg, seed=0, num_examples=1)
    with pytest.raises(ValueError, match=field):
        mqar_batch(cfg, seed=0, indices=[0])


@pytest.mark.parametrize("v, l, n", [(10, 16, 4), (4, 4, 1)])  # on the boundary of every rule
def test_validation_accepts_minimal_config(v, l, n):
    cfg = MQARConfig(vocab_size=v, seq_len=l, num_pairs=n)
    cfg.validate()
    ex = MQARSource(cfg, seed=0, num_examples=1)[0]
    assert ex["inputs"].shape == (l,) and int((ex["targets"] != IGNORE_INDEX).sum()) == n


@pytest.mark.parametrize("num_examples", [0, -3])
def test_num_examples_error(num_examples):
    with pytest.raises(ValueError, match="num_examples"):
        MQARSource(BASE, seed=0, num_examples=num_examples)


def test_seed_error():
    with pytest.raises(ValueError, match="seed"):
        MQARSource(BASE, seed=-1, num_examples=1)
