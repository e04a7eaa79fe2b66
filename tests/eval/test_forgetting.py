import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import memarch.train.setup as train_setup
from memarch.data.fact_stream import FactStream, FactStreamConfig
from memarch.data.overwrite_stream import (
    UNSET,
    OverwriteQuery,
    OverwriteStreamConfig,
    OverwriteStreamSource,
)
from memarch.data.segmented_recall import SegmentedRecallConfig, SegmentedRecallSource
from memarch.eval import cl_metrics
from memarch.eval.forgetting import (
    classify_error,
    continual_fact_training,
    evaluate_overwrite_stream,
    log2_bin,
    segmented_logits,
    segmented_retention,
)
from memarch.models import LM, LMConfig
from memarch.train.config import OptimConfig, TrainConfig


def _query(label, stale=(), others=()):
    return OverwriteQuery(
        9, 5, label, 4, 2, 1, len(stale), 0, 6, tuple(stale), tuple(others), False
    )


def test_error_classification_on_hand_made_predictions():
    q = _query(20, stale=(18, 19), others=(30, 31))
    assert classify_error(20, q) == "correct"
    assert classify_error(19, q) == "stale"
    assert classify_error(31, q) == "other_key"
    assert classify_error(7, q) == "other"
    assert classify_error(UNSET, q) == "other"
    unset = _query(UNSET, others=(30,))
    assert classify_error(UNSET, unset) == "correct"
    assert classify_error(30, unset) == "false_alarm"
    assert [log2_bin(x) for x in (1, 2, 3, 4, 7, 8)] == [0, 1, 1, 2, 2, 3]


OW = OverwriteStreamConfig(vocab_size=256, seq_len=80, num_keys=5, p_update=0.6, query_prob=0.3)


def _by_position(src, rule):
    """A predictor that answers each query of ``src`` with ``rule(query)``."""
    table = {}
    for i in range(len(src)):
        out = np.zeros(OW.seq_len, dtype=np.int64)
        for q in src.queries(i):
            out[q.position] = rule(q)
        table[src[i]["inputs"].tobytes()] = out
    return lambda x: np.stack([table[r.tobytes()] for r in x])


def test_buckets_and_error_classes_of_constructed_predictors():
    src = OverwriteStreamSource(OW, seed=0, num_examples=60)
    # a memory that keeps only each key's first value: right iff never overwritten
    first = _by_position(src, lambda q: (q.stale_values + (q.label,))[0])
    report = evaluate_overwrite_stream(first, src, batch_size=16)
    assert report.by_prior_updates[0][0] == 1.0
    assert all(acc == 0.0 for n, (acc, _) in report.by_prior_updates.items() if n > 0)
    assert report.errors["stale"] == sum(c for n, (_, c) in report.by_prior_updates.items() if n)
    assert report.errors["other_key"] == report.errors["other"] == 0
    assert report.error_fractions()["stale"] == 1.0
    # a memory with a short window: right iff the write is fewer than 8 tokens back
    window = _by_position(src, lambda q: q.label if q.lag_tokens < 8 else 3)  # 3: a key
    report = evaluate_overwrite_stream(window, src)
    assert {b: a for b, (a, _) in report.by_lag.items()} == {
        b: (1.0 if b < 3 else 0.0) for b in report.by_lag
    }
    assert report.errors["other"] == sum(c for b, (_, c) in report.by_lag.items() if b >= 3)
    assert report.l50() == 8
    assert report.num_queries == sum(c for _, c in report.by_lag.values())


SEG = SegmentedRecallConfig(
    vocab_size=64,
    num_segments=4,
    segment_len=16,
    facts_per_segment=2,
    distances=(0, 1, 2),
    queries_per_distance=2,
)


@pytest.fixture(scope="module")
def hybrid():
    """An untrained Gated DeltaNet + attention LM (both kinds of cache)."""
    return LM(LMConfig(vocab_size=64, d_model=32, num_heads=2, pattern="GA"), rngs=nnx.Rngs(0))


def test_segments_carry_the_memory_and_reset_drops_it(hybrid):
    src = SegmentedRecallSource(SEG, seed=0, num_examples=3)
    x = jnp.asarray(np.stack([src[i]["inputs"] for i in range(3)]))
    forward = nnx.jit(lambda m, tokens: m(tokens)[0])
    full = forward(hybrid, x)
    carried = segmented_logits(hybrid, x, SEG.segment_len)
    np.testing.assert_allclose(carried, full, atol=1e-4, rtol=1e-4)
    reset = segmented_logits(hybrid, x, SEG.segment_len, reset=True)
    c = SEG.segment_len
    alone = jnp.concatenate([forward(hybrid, x[:, s * c : (s + 1) * c]) for s in range(4)], 1)
    np.testing.assert_allclose(reset, alone, atol=1e-4, rtol=1e-4)
    assert np.abs(np.asarray(reset[:, c:] - full[:, c:])).max() > 1e-2  # memory did matter
    with pytest.raises(ValueError, match="segment_len"):
        segmented_logits(hybrid, x, 5)


def test_reset_control_is_at_chance(hybrid):
    src = SegmentedRecallSource(SEG, seed=1, num_examples=96)
    report = segmented_retention(hybrid, src, reset=True, batch_size=3)  # shapes as above
    assert report.R.shape == (4, 4) and np.isnan(report.R[0, 1:]).all()
    assert set(report.by_distance) == {0, 1, 2}
    below = np.tril(np.ones((4, 4), bool), k=-1)  # d >= 1: only the memory could answer
    n = int(report.counts[below].sum())
    assert n == 96 * 5 * 2  # (segment, d): (1, 1), (2, 1), (2, 2), (3, 1), (3, 2); Q = 2
    hits = int(report.correct[below].sum())
    asked = report.counts > 0
    np.testing.assert_array_equal(report.correct[asked] / report.counts[asked], report.R[asked])
    assert np.isnan(report.R[~asked]).all()
    p = report.chance
    assert p == 1 / 32
    assert abs(hits / n - p) < 4 * np.sqrt(p * (1 - p) / n)
    pooled = report.pooled_by_distance()
    assert pooled[2] == pytest.approx(report.correct[[2, 3], [0, 1]].sum() / (2 * 96 * 2))


TINY = TrainConfig(
    name="facts",
    model=LMConfig(vocab_size=64, d_model=32, num_heads=2, pattern="A", mlp_hidden=64),
    optim=OptimConfig(learning_rate=1e-2, warmup_steps=2, schedule="constant", weight_decay=0.0),
    batch_size=16,
    seed=0,
)
FACTS = FactStreamConfig(vocab_size=64, num_tasks=2, facts_per_task=16, exposures=30)


def test_two_task_fact_stream_gives_the_accuracy_matrix():
    result = continual_fact_training(TINY, FactStream(FACTS, seed=0), eval_every=10)
    r = result.R
    assert r.shape == (2, 2)
    assert r[0, 0] >= 0.9 and r[1, 1] >= 0.9  # each task is learnt while it is trained
    assert r[0, 1] <= 0.25  # task 2 is not known before it is trained (chance 1/32)
    np.testing.assert_array_equal(result.task_ends, [30, 60])
    np.testing.assert_array_equal(result.steps, [0, 10, 20, 30, 40, 50, 60])
    np.testing.assert_array_equal(result.curves[3], r[0])
    np.testing.assert_array_equal(result.curves[-1], r[1])
    np.testing.assert_array_equal(result.curves[0], result.baseline)
    assert result.losses.shape == (60,) and np.all(np.isfinite(result.losses))
    assert result.losses[29] < result.losses[0] / 4
    assert result.metrics == cl_metrics.summary(r)
    assert result.metrics["bwt"] == pytest.approx(r[1, 0] - r[0, 0])


def test_bad_parameters_fail_before_any_training(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(train_setup, "make_train_step", no_training)
    stream = FactStream(FACTS, seed=0)
    with pytest.raises(ValueError, match="eval_every must be an int >= 1"):
        continual_fact_training(TINY, stream, eval_every=0)
    small = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, vocab_size=32))
    with pytest.raises(ValueError, match=r"model.vocab_size \(32\) must be >= data.vocab_size"):
        continual_fact_training(small, stream, eval_every=5)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        continual_fact_training(dataclasses.replace(TINY, batch_size=0), stream, eval_every=5)
    with pytest.raises(ValueError, match="stream must be a FactStream"):
        continual_fact_training(TINY, FACTS, eval_every=5)
