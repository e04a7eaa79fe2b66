"""Continual fact-stream training (memarch.train.continual): when the caller's evaluation runs,
what it is given and what the run returns; bad input fails before any training."""

import dataclasses

import numpy as np
import pytest

from memarch.data.fact_stream import FactStream, FactStreamConfig
from memarch.models import LM, LMConfig
from memarch.train.config import OptimConfig, TrainConfig
from memarch.train.continual import train_fact_stream

TINY = TrainConfig(
    name="facts",
    model=LMConfig(vocab_size=64, d_model=16, num_heads=2, pattern="A", mlp_hidden=0),
    optim=OptimConfig(learning_rate=1e-2, warmup_steps=2, schedule="constant"),
    batch_size=16,
    seed=0,
)
FACTS = FactStreamConfig(vocab_size=64, num_tasks=2, facts_per_task=16, exposures=10)


def test_evaluation_at_start_every_n_steps_and_every_task_end():
    stream = FactStream(FACTS, seed=0)
    per_task = stream.steps_per_task(TINY.batch_size)
    calls, messages = [], []

    def evaluate(model, step):
        calls.append(step)
        assert isinstance(model, LM)
        return np.array([step, -step])

    run = train_fact_stream(TINY, stream, eval_every=4, evaluate=evaluate, log=messages.append)
    total = 2 * per_task
    want = sorted({0, per_task, total, *range(4, total + 1, 4)})
    assert calls == want
    np.testing.assert_array_equal(run.steps, want)
    np.testing.assert_array_equal(run.accuracy, [[s, -s] for s in want])
    np.testing.assert_array_equal(run.task_ends, [per_task, total])
    assert run.losses.shape == (total,) and np.all(np.isfinite(run.losses))
    assert [m.split(";")[0] for m in messages] == [
        f"facts: task 0 done at step {per_task}",
        f"facts: task 1 done at step {total}",
    ]


@pytest.mark.parametrize(
    "change,stream,match",
    [
        ({"eval_every": 0}, FactStream(FACTS, seed=0), "eval_every must be an int >= 1"),
        ({"eval_every": True}, FactStream(FACTS, seed=0), "eval_every must be an int >= 1"),
        ({}, FACTS, "stream must be a FactStream"),
    ],
)
def test_bad_arguments_fail_before_evaluating(change, stream, match):
    def evaluate(model, step):
        raise AssertionError("evaluated")

    kwargs = dict({"eval_every": 5}, **change)
    with pytest.raises(ValueError, match=match):
        train_fact_stream(TINY, stream, evaluate=evaluate, **kwargs)


def test_config_errors_name_the_field():
    small = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, vocab_size=32))
    with pytest.raises(ValueError, match=r"model.vocab_size \(32\) must be >= data.vocab_size"):
        train_fact_stream(small, FactStream(FACTS, seed=0), eval_every=5, evaluate=None)
