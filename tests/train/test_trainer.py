"""End-to-end training on CPU: a 2-layer attention model learns a small MQAR setting."""

import dataclasses

import numpy as np
import pytest

from memarch.eval.periodic import periodic_evaluation
from memarch.eval.recall import evaluate_slices
from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig
from memarch.train.run_dir import load_params
from memarch.train.setup import build_model
from memarch.train.trainer import train

SMALL = TrainConfig(
    name="mqar_small",
    model=LMConfig(
        vocab_size=64,
        d_model=64,
        num_heads=2,
        pattern="AA",
        mlp_hidden=0,
        mixers={"attention": {"short_conv": 4}},
    ),
    data=DataConfig(
        vocab_size=64,
        train_slices=((32, 4),),
        eval_slices=((32, 4),),
        num_train_examples=10_000,
        num_eval_examples=256,
    ),
    optim=OptimConfig(learning_rate=3e-3, warmup_steps=30),
    batch_size=32,
    num_steps=300,
    log_every=50,
)


def test_two_layer_attention_learns_mqar(tmp_path, xla_optimized):
    res = train(SMALL, workdir=tmp_path, evaluate=periodic_evaluation(SMALL))
    acc = res.evals[-1]["accuracy"][(32, 4)]
    assert acc >= 0.95, f"accuracy {acc:.3f} after {SMALL.num_steps} steps"
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    # the run directory has the resolved config, metrics and parameters, and they restore
    assert (tmp_path / "config.json").exists() and (tmp_path / "metrics.jsonl").exists()
    restored = load_params(build_model(SMALL), tmp_path / "params")
    assert evaluate_slices(restored, SMALL.data) == res.evals[-1]["accuracy"]


def test_short_run_is_deterministic():
    cfg = dataclasses.replace(SMALL, num_steps=3, log_every=1)
    a, b = train(cfg), train(cfg)
    np.testing.assert_array_equal([h["loss"] for h in a.history], [h["loss"] for h in b.history])


@pytest.mark.parametrize(
    "override,match",
    [
        ({"num_steps": 0}, "num_steps"),
        ({"model": dataclasses.replace(SMALL.model, vocab_size=32)}, "model.vocab_size"),
        ({"data": dataclasses.replace(SMALL.data, task="copy")}, "data.task must be one of"),
        ({"data": dataclasses.replace(SMALL.data, train_slices=((32, 40),))}, "vocab_size"),
        ({"data": dataclasses.replace(SMALL.data, train_slices=((16, 8),))}, "seq_len"),
    ],
)
def test_bad_training_configs(override, match):
    with pytest.raises(ValueError, match=match):
        train(dataclasses.replace(SMALL, **override))
