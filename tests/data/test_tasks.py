"""The task registry: on every task the oracle scores 100 % and a uniform guess scores chance
(binomial tolerance), train and test streams do not overlap, every task trains through the
pipeline, and bad task parameters fail before any training."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from memarch.data.config import DataConfig
from memarch.data.pipeline import (
    data_task_names,
    eval_batches,
    prompt_len,
    slice_source,
    train_dataset,
)
from memarch.data.source import IGNORE_INDEX
from memarch.data.tasks import RECALL_TASKS, get_task, slice_config, uniform_predictions
from memarch.eval.recall import accuracy

# one small data section per task: (data config, two slices)
DATA = {
    "mqar": DataConfig(task="mqar", vocab_size=64, train_slices=((32, 4), (48, 6))),
    "forgetting_mqar": DataConfig(
        task="forgetting_mqar",
        vocab_size=64,
        overwrite_fraction=0.5,
        train_slices=((48, 4), (64, 6)),
    ),
    "needle": DataConfig(
        task="needle", vocab_size=64, needle_value_len=2, train_slices=((48, 3), (64, 2))
    ),
    "passkey": DataConfig(task="passkey", vocab_size=64, train_slices=((48, 5), (64, 3))),
    "selective_copy": DataConfig(
        task="selective_copy", vocab_size=16, train_slices=((48, 8), (64, 4))
    ),
    "induction": DataConfig(task="induction", vocab_size=16, train_slices=((48, 1), (64, 3))),
    "set_disjointness": DataConfig(
        task="set_disjointness", vocab_size=64, train_slices=((4, 16), (16, 4))
    ),
    "overwrite_stream": DataConfig(
        task="overwrite_stream",
        vocab_size=64,
        stream_unset_prob=0.1,
        stream_final_queries=2,
        train_slices=((48, 4), (64, 8)),
    ),
    "segmented_recall": DataConfig(
        task="segmented_recall", vocab_size=128, train_slices=((6, 32), (8, 40))
    ),
}


def test_every_task_is_registered_and_trainable():
    assert set(DATA) == set(RECALL_TASKS) and set(data_task_names()) == {*RECALL_TASKS, "text"}
    for name, spec in RECALL_TASKS.items():
        assert spec.name == name and len(spec.slice_names) == 2
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("mqr")


def test_user_task_is_registered_beside_the_builtins():
    """A task registered outside memarch is accepted by data.task and the pipeline alike."""
    spec = dataclasses.replace(get_task("mqar"), name="t_my_mqar")
    RECALL_TASKS.register("t_my_mqar", spec)
    try:
        assert "t_my_mqar" in data_task_names() and get_task("t_my_mqar") is spec
        data = dataclasses.replace(DATA["mqar"], task="t_my_mqar")
        mine = slice_source(data, *data.train_slices[0], seed=1, num_examples=2)
        ref = slice_source(DATA["mqar"], *data.train_slices[0], seed=1, num_examples=2)
        np.testing.assert_array_equal(mine[1]["inputs"], ref[1]["inputs"])
        with pytest.raises(ValueError, match="built-in task"):
            RECALL_TASKS.register("mqar", spec, replace=True)
    finally:
        RECALL_TASKS.unregister("t_my_mqar")
    assert "t_my_mqar" not in data_task_names()


@pytest.mark.parametrize("name", RECALL_TASKS.available())
def test_oracle_scores_one_and_uniform_scores_chance(name):
    data = DATA[name]
    spec = get_task(name)
    rng = np.random.default_rng(0)
    for a, b in data.train_slices:
        config = slice_config(data, a, b)
        src = slice_source(data, a, b, seed=5, num_examples=600)
        inputs = np.stack([src[i]["inputs"] for i in range(len(src))])
        targets = np.stack([src[i]["targets"] for i in range(len(src))])
        mask = targets != IGNORE_INDEX
        # every label is a candidate answer (so a uniform guess has expectation = chance)
        assert np.isin(targets[mask], spec.answer_tokens(config)).all()
        assert spec.chance(config) == pytest.approx(1 / len(spec.answer_tokens(config)))
        # the oracle reads the inputs only (targets give it the positions, never the values)
        blind = np.where(mask, -1, IGNORE_INDEX)
        np.testing.assert_array_equal(spec.oracle(config, inputs, blind)[mask], targets[mask])
        assert accuracy(spec.oracle(config, inputs, targets), targets) == 1.0
        uniform = accuracy(uniform_predictions(spec, config, targets, rng), targets)
        p, k = spec.chance(config), int(mask.sum())
        assert abs(uniform - p) <= 4.5 * math.sqrt(p * (1 - p) / k) + 1 / k, (uniform, p, k)
        # a predictor that always answers the first candidate is not an oracle
        assert accuracy(np.where(mask, spec.answer_tokens(config)[0], -1), targets) < 0.5


def test_forgetting_labels_are_the_latest_value():
    data = DATA["forgetting_mqar"]
    config = slice_config(data, 64, 6)
    assert config.num_overwrites == 3
    src = slice_source(data, 64, 6, seed=0, num_examples=200)
    stale = 0
    for i in range(len(src)):
        inputs, targets = src[i]["inputs"], src[i]["targets"]
        for q in np.flatnonzero(targets != IGNORE_INDEX):
            pairs = [
                (j, inputs[j + 1])
                for j in range(0, config.context_len, 2)
                if inputs[j] == inputs[q]
            ]
            assert targets[q] == pairs[-1][1]  # the latest assignment of the key
            stale += len(pairs) > 1 and pairs[0][1] != targets[q]
    assert stale == 200 * 3  # three re-assigned keys per example, all asked
    # a single pair still gets one re-assignment
    assert (
        slice_config(dataclasses.replace(data, overwrite_fraction=0.1), 16, 1).num_overwrites == 1
    )


@pytest.mark.parametrize("name", RECALL_TASKS.available())
def test_train_and_test_streams_do_not_overlap(name):
    data = DATA[name]
    for i, (a, b) in enumerate(data.train_slices):
        train = slice_source(data, a, b, seed=data.seed + 1000 * i, num_examples=300)
        test = [
            batch
            for batch in eval_batches(dataclasses.replace(data, num_eval_examples=300), a, b, 100)
        ]
        seen = {train[j]["inputs"].tobytes() for j in range(len(train))}
        test_rows = np.concatenate([t["inputs"] for t in test])
        assert len(test_rows) == 300
        assert not any(row.tobytes() in seen for row in test_rows)


@pytest.mark.parametrize("name", RECALL_TASKS.available())
def test_pipeline_trains_every_task(name):
    data = DATA[name]
    lengths = [slice_config(data, a, b).seq_len for a, b in data.train_slices]
    batch = train_dataset(data, 4)[0]
    assert batch["inputs"].shape == (4, max(lengths))
    assert batch["targets"].shape == (4, max(lengths))
    assert (batch["targets"] != IGNORE_INDEX).any(axis=1).all()
    np.testing.assert_array_equal(train_dataset(data, 4)[0]["inputs"], batch["inputs"])
    for a, b in data.train_slices:
        first = np.argmax(next(eval_batches(data, a, b, 2))["targets"] != IGNORE_INDEX, axis=1)
        assert (first >= prompt_len(data, a, b)).all()  # nothing labelled inside the prompt


@pytest.mark.parametrize(
    "name,change,field",
    [
        ("mqar", {"train_slices": ((16, 8),)}, "seq_len"),
        ("forgetting_mqar", {"overwrite_fraction": 0.0}, "overwrite_fraction"),
        ("needle", {"needle_depth": 120.0}, "depth"),
        ("passkey", {"vocab_size": 16}, "vocab_size"),
        ("selective_copy", {"train_slices": ((10, 5),)}, "seq_len"),
        ("induction", {"train_slices": ((64, 0),)}, "num_triggers"),
        ("set_disjointness", {"train_slices": ((4, 40),)}, "vocab_size"),
        ("overwrite_stream", {"stream_p_update": 1.5}, "p_update"),
        ("segmented_recall", {"segment_queries": 9}, "queries_per_distance"),
    ],
)
def test_bad_task_parameters_fail_before_training(name, change, field, monkeypatch):
    """``train`` rejects the data section before building a mesh or compiling anything."""
    from memarch.train import trainer
    from memarch.train.config import TrainConfig

    def no_mesh(*args, **kwargs):
        raise AssertionError("the mesh was built before the data config was checked")

    monkeypatch.setattr(trainer, "make_mesh", no_mesh)
    cfg = TrainConfig(data=dataclasses.replace(DATA[name], **change), num_steps=1, batch_size=2)
    with pytest.raises(ValueError, match=field) as err:
        trainer.train(cfg)
    assert name in str(err.value) or field == "overwrite_fraction"
