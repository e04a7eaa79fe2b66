import dataclasses

import numpy as np
import pytest

from memarch.data.fact_stream import (
    ARROW,
    BOS,
    FactStream,
    FactStreamConfig,
    chance_accuracy,
    fact_rows,
)
from memarch.data.source import IGNORE_INDEX
from memarch.eval.forgetting import source_accuracy

CFG = FactStreamConfig(vocab_size=64, num_tasks=3, facts_per_task=40, exposures=3)


def test_layout_and_exactly_one_answer_per_query():
    stream = FactStream(CFG, seed=0)
    all_pairs = []
    for j in range(CFG.num_tasks):
        keys, values = stream.facts(j)
        assert keys.shape == (40, 2) and values.shape == (40,)
        assert np.all((keys >= 3) & (keys < 32)) and np.all((values >= 32) & (values < 64))
        all_pairs += [tuple(k) for k in keys.tolist()]
        item = stream.eval_source(j)[5]
        np.testing.assert_array_equal(item["inputs"], [BOS, *keys[5], ARROW])
        np.testing.assert_array_equal(item["targets"], [IGNORE_INDEX] * 3 + [values[5]])
    # key pairs are distinct over the whole stream: tasks are disjoint, one answer per query
    assert len(set(all_pairs)) == len(all_pairs) == CFG.num_tasks * CFG.facts_per_task


def test_training_order_shows_each_fact_exposures_times():
    stream = FactStream(CFG, seed=1)
    src = stream.train_source(1)
    assert len(src) == 40 * 3
    seen = [src[i]["inputs"].tobytes() for i in range(len(src))]
    facts = {stream.eval_source(1)[i]["inputs"].tobytes() for i in range(40)}
    assert set(seen) == facts
    assert all(seen.count(f) == 3 for f in facts)
    assert seen[:40] != seen[40:80]  # reshuffled every epoch
    # batches walk through the training source; steps_per_task covers N·E rows
    assert stream.steps_per_task(16) == 8
    batch = stream.train_batch(1, 2, 16)
    np.testing.assert_array_equal(batch["inputs"][0], src[32]["inputs"])


def test_determinism_and_seed_disjointness():
    a, b, c = FactStream(CFG, seed=0), FactStream(CFG, seed=0), FactStream(CFG, seed=1)
    for j in range(CFG.num_tasks):
        for x, y in zip(a.facts(j), b.facts(j), strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(
        a.train_batch(2, 3, 8)["inputs"], b.train_batch(2, 3, 8)["inputs"]
    )
    pairs = lambda s: {tuple(k) for j in range(3) for k in s.facts(j)[0].tolist()}
    # another seed draws other facts (a few key pairs may coincide by chance: 120 of 841)
    assert len(pairs(a) & pairs(c)) < 40


def test_oracle_scores_one_and_uniform_scores_chance_on_every_task():
    cfg = dataclasses.replace(CFG, facts_per_task=250)
    stream = FactStream(cfg, seed=2)
    table = {}
    for j in range(cfg.num_tasks):
        keys, values = stream.facts(j)
        table.update({tuple(k): v for k, v in zip(keys.tolist(), values.tolist(), strict=True)})

    def oracle(x):
        out = np.zeros_like(x)
        out[:, 3] = [table[(r[1], r[2])] for r in x.tolist()]
        return out

    rng = np.random.default_rng(0)
    uniform = lambda x: rng.integers(32, 64, size=x.shape)
    p = chance_accuracy(cfg)
    assert p == 1 / 32
    for j in range(cfg.num_tasks):
        assert source_accuracy(oracle, stream.eval_source(j)) == 1.0
        acc = source_accuracy(uniform, stream.eval_source(j))
        assert abs(acc - p) < 4 * np.sqrt(p * (1 - p) / 250)


@pytest.mark.parametrize("kind", ["uniform", "power"])
def test_rehearsal_replays_earlier_tasks_with_the_right_weights(kind):
    cfg = dataclasses.replace(
        CFG, num_tasks=4, rehearsal=kind, rehearsal_fraction=0.5, rehearsal_alpha=2.0
    )
    stream = FactStream(cfg, seed=0)
    owner = {}
    for j in range(4):
        owner.update({tuple(k): j for k in stream.facts(j)[0].tolist()})
    counts = np.zeros(4)
    for step in range(500):
        batch = stream.train_batch(3, step, 8)
        tasks = [owner[tuple(r[1:3])] for r in batch["inputs"].tolist()]
        assert tasks[:4] == [3] * 4  # the current task's rows first
        # replayed rows: earlier tasks, labelled with that task's value
        for t in tasks[4:]:
            assert t < 3
            counts[t] += 1
    w = np.array([3.0, 2.0, 1.0]) ** -2 if kind == "power" else np.ones(3)
    np.testing.assert_allclose(
        counts[:3] / counts.sum(), w / w.sum(), atol=0.04
    )  # 2000 draws: σ <= 0.011
    # task 0 has nothing to replay: its batches are all its own facts
    first = stream.train_batch(0, 0, 8)
    assert all(owner[tuple(r[1:3])] == 0 for r in first["inputs"].tolist())


def test_fact_rows_layout():
    rows = fact_rows(np.array([[3, 4], [5, 6]]), np.array([40, 41]))
    np.testing.assert_array_equal(rows["inputs"], [[BOS, 3, 4, ARROW], [BOS, 5, 6, ARROW]])
    assert rows["targets"][:, 3].tolist() == [40, 41]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"num_tasks": 0}, "num_tasks must be an int >= 1"),
        ({"facts_per_task": 2.5}, "facts_per_task must be an int"),
        ({"exposures": 0}, "exposures must be an int >= 1"),
        ({"vocab_size": 6}, "vocab_size must be >= 8"),
        ({"vocab_size": 16, "facts_per_task": 20}, "distinct key pairs"),
        ({"rehearsal": "replay"}, "rehearsal must be one of"),
        ({"rehearsal": "uniform", "rehearsal_fraction": 1.0}, r"rehearsal_fraction .* \[0, 1\)"),
        ({"rehearsal_fraction": 0.5}, "needs rehearsal='uniform' or 'power'"),
        ({"rehearsal_alpha": 0.0}, "rehearsal_alpha must be a finite float > 0"),
    ],
)
def test_bad_parameters_raise_clear_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        FactStream(dataclasses.replace(CFG, **changes), seed=0)


def test_bad_task_seed_and_batch_size():
    stream = FactStream(CFG, seed=0)
    with pytest.raises(ValueError, match=r"task must be in \[0, num_tasks=3\)"):
        stream.facts(3)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        FactStream(CFG, seed=-1)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        stream.train_batch(0, 0, 0)
