"""Recall evaluation on any task: a hand-built induction head scores 1.0 through the model
path, an untrained model matches evaluate_slices and scores near chance, oracle/chance rows,
tables and early errors."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch.data.config import DataConfig
from memarch.data.tasks import get_task, slice_config
from memarch.eval.recall import (
    accuracy,
    baselines,
    evaluate_slices,
    evaluate_task,
    recall_table,
    task_data,
)
from memarch.models import LM, LMConfig

DATA = DataConfig(vocab_size=32, eval_slices=((24, 2), (32, 3)), num_eval_examples=12)


class CopyAfterLastOccurrence(nnx.Module):
    """A perfect induction head: at position t, one-hot logits of the token that followed the
    latest earlier occurrence of ``inputs[t]`` (token 0 if there is none)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, inputs, segment_ids=None):
        t = inputs.shape[1]
        same = inputs[:, :, None] == inputs[:, None, :]  # [B, t, j]
        earlier = jnp.arange(t)[None, :] < jnp.arange(t)[:, None]  # j < t
        last = jnp.max(jnp.where(same & earlier, jnp.arange(t), -1), axis=-1)  # [B, t]
        nxt = jnp.take_along_axis(inputs, jnp.clip(last + 1, 0, t - 1), axis=1)
        pred = jnp.where(last >= 0, nxt, 0)
        return jnp.eye(self.vocab_size)[pred], None


@pytest.mark.parametrize(
    "task,change",
    [
        ("mqar", {}),
        ("forgetting_mqar", {"overwrite_fraction": 0.5, "eval_slices": ((32, 2), (48, 4))}),
        ("induction", {}),
        ("needle", {}),
    ],
)
def test_a_perfect_induction_head_scores_one_through_the_model_path(task, change):
    """Every step of the model path (batching, padding-free slices, argmax, masking) is
    exercised by a model that solves these tasks exactly."""
    acc = evaluate_task(
        CopyAfterLastOccurrence(32), task, dataclasses.replace(DATA, **change), batch_size=5
    )
    assert set(acc) == set(change.get("eval_slices", DATA.eval_slices))
    assert all(a == 1.0 for a in acc.values()), acc


def test_the_induction_head_cannot_copy_a_list_intersection():
    acc = evaluate_task(CopyAfterLastOccurrence(32), "set_disjointness", DATA, ((4, 8),))
    assert acc[(4, 8)] < 0.5


def test_untrained_model_matches_evaluate_slices_and_is_a_fraction():
    model = LM(LMConfig(vocab_size=32, d_model=16, num_heads=2, pattern="A"), rngs=nnx.Rngs(0))
    slices = ((3, 6),)
    acc = evaluate_task(model, "set_disjointness", DATA, slices, batch_size=12)
    want = evaluate_slices(
        model, dataclasses.replace(DATA, task="set_disjointness"), slices, batch_size=12
    )
    assert acc == want and set(acc) == {(3, 6)} and 0.0 <= acc[(3, 6)] <= 1.0


@pytest.mark.parametrize(
    "task", ["mqar", "needle", "passkey", "selective_copy", "induction", "set_disjointness"]
)
def test_baselines_oracle_is_one_and_chance_is_the_formula(task):
    slices = ((4, 12), (12, 4)) if task == "set_disjointness" else DATA.eval_slices
    rows = baselines(task, DATA, slices, batch_size=5)
    assert set(rows) == {"chance", "oracle"} and set(rows["oracle"]) == set(slices)
    for s in slices:
        data = dataclasses.replace(DATA, task=task)
        assert rows["chance"][s] == get_task(task).chance(slice_config(data, *s))
        assert rows["oracle"][s] == 1.0


def test_accuracy_metric():
    targets = np.array([[-100, 5, -100, 7], [3, -100, -100, -100]])
    assert accuracy(np.array([[0, 5, 0, 0], [3, 0, 0, 0]]), targets) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shape"):
        accuracy(np.zeros((2, 3)), targets)
    with pytest.raises(ValueError, match="labelled"):
        accuracy(np.zeros((1, 2)), np.full((1, 2), -100))


@pytest.mark.parametrize(
    "task,slices,match",
    [
        ("mqr", None, "task must be one of"),
        ("mqar", ((16, 8),), "seq_len"),
        ("induction", ((8, 3),), "seq_len"),
        ("selective_copy", ((8, 4),), "seq_len"),
        ("set_disjointness", ((40, 4),), "vocab_size"),
        ("forgetting_mqar", None, "overwrite_fraction"),
        ("mqar", ((16, 2, 1),), "pair"),
        ("mqar", (), "at least one"),
    ],
)
def test_bad_task_or_slice_fails_before_the_model_is_touched(task, slices, match):
    with pytest.raises(ValueError, match=match):
        task_data(DATA, task, slices)
    with pytest.raises(ValueError, match=match):
        evaluate_task(None, task, DATA, slices)  # no model needed to find the error


def test_recall_table():
    table = recall_table(
        {"m": {(4, 16): 1.0, (16, 4): 0.5}, "chance": {(4, 16): 0.25}}, ("first", "second")
    )
    lines = table.splitlines()
    assert lines[0] == "| model | first=4, second=16 | first=16, second=4 | mean |"
    assert "| m | 1.000 | 0.500 | 0.750 |" in lines and "| chance | 0.250 | — | 0.250 |" in lines


def test_untrained_model_scores_near_chance_per_slice():
    data = DataConfig(vocab_size=32, eval_slices=((16, 2), (24, 3)), num_eval_examples=20)
    model = LM(LMConfig(vocab_size=32, d_model=16, num_heads=2, pattern="A"), rngs=nnx.Rngs(0))
    acc = evaluate_slices(model, data, batch_size=8)
    assert set(acc) == {(16, 2), (24, 3)}
    assert all(0.0 <= a <= 0.3 for a in acc.values())


def test_recall_table_default_slice_names():
    results = {"a": {(16, 2): 1.0, (24, 3): 0.5}, "b": {(16, 2): 0.25}}
    table = recall_table(results)
    assert "| a | 1.000 | 0.500 | 0.750 |" in table and "| b | 0.250 | — | 0.250 |" in table
