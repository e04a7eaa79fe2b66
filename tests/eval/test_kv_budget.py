"""Recall-under-budget evaluation: full-cache decoding reproduces the full forward; a budget
changes only what the decode caches keep; policies swap without touching the parameters."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from memarch.eval.kv_budget import (
    budgeted_call,
    decode_logits,
    global_policy,
    global_total,
    kv_buffers,
    recall_by_depth,
    recall_under_budget,
    with_eviction,
)
from memarch.kvcache import GlobalRetentionEviction, RetentionEviction, StreamingLLM, total_kept
from memarch.models.lm import LM, LMConfig
from memarch.testing import assert_close
from memarch.train.config import DataConfig


def tiny_lm(pattern="KF"):
    opts = {"trimkv": {"gate_bias": 1.0, "gate_hidden": 8}, "fox": {"forget_bias": 2.0}}
    cfg = LMConfig(
        vocab_size=32, d_model=32, num_heads=2, pattern=pattern, mlp_hidden=0, mixers=opts
    )
    return LM(cfg, rngs=nnx.Rngs(0))


def test_full_cache_decoding_equals_forward():
    model = tiny_lm()
    tok = jax.random.randint(jax.random.key(0), (2, 14), 0, 32)
    full = model(tok)[0]
    assert_close("decode vs forward", decode_logits(model, tok, 8), full, 1e-5)
    budgeted = with_eviction(model, StreamingLLM(budget=6, sinks=2))
    got = decode_logits(budgeted, tok, 8)
    assert_close("prefill unaffected", got[:, :8], full[:, :8], 1e-5)
    assert float(jnp.max(jnp.abs(got[:, 8:] - full[:, 8:]))) > 1e-4
    assert_close("same parameters", budgeted(tok)[0], full, 1e-6)
    assert model.blocks[0].mixer.config.eviction is None  # the original is untouched


def test_recall_under_budget_runs_each_policy():
    cfg = DataConfig(
        vocab_size=32,
        train_slices=((24, 4),),
        eval_slices=((24, 4),),
        num_train_examples=16,
        num_eval_examples=8,
    )
    acc = recall_under_budget(
        tiny_lm(), cfg, 24, 4, {"full": None, "trimkv": RetentionEviction(budget=12)}, batch_size=8
    )
    assert set(acc) == {"full", "trimkv"} and all(0.0 <= a <= 1.0 for a in acc.values())


def test_with_eviction_needs_a_decay_attention_layer():
    with pytest.raises(ValueError, match="no decay-attention layer"):
        with_eviction(tiny_lm("A"), RetentionEviction(budget=4))


def test_global_budget_decoding():
    """One budget over layers and KV heads: a total that fits every key changes nothing; a
    small one caps the kept keys after every call and changes only the decoded part."""
    model = tiny_lm("KK")
    tok = jax.random.randint(jax.random.key(1), (2, 14), 0, 32)
    full = model(tok)[0]
    roomy = with_eviction(model, GlobalRetentionEviction(budget=14, total=4 * 14))
    assert global_total(roomy) == 56
    assert_close("total >= every key", decode_logits(roomy, tok, 8), full, 1e-5)
    tight = with_eviction(model, GlobalRetentionEviction(budget=6, total=10))
    got = decode_logits(tight, tok, 8)
    assert_close("prefill unaffected", got[:, :8], full[:, :8], 1e-5)
    assert float(jnp.max(jnp.abs(got[:, 8:] - full[:, 8:]))) > 1e-4
    cache = tight.init_cache(2, 14, jnp.float32)
    for t0, t1 in ((0, 8), (8, 9), (9, 10)):
        _, cache = budgeted_call(tight, tok[:, t0:t1], cache, 10)
        assert list(map(int, total_kept(cache))) == [10, 10]
    assert kv_buffers(model) == 4  # 2 layers × 2 KV heads
    assert global_policy(6, 14, 4) == GlobalRetentionEviction(budget=14, total=24)


def test_global_total_needs_one_shared_policy():
    assert global_total(with_eviction(tiny_lm("KK"), RetentionEviction(budget=4))) is None
    mixed = with_eviction(tiny_lm("KK"), GlobalRetentionEviction(budget=4, total=6))
    layer = mixed.blocks[1].mixer
    layer.config = dataclasses.replace(layer.config, eviction=RetentionEviction(budget=4))
    with pytest.raises(ValueError, match="global budget needs every decay-attention layer"):
        global_total(mixed)


def test_needle_recall_under_budget_and_by_depth():
    cfg = DataConfig(
        task="needle",
        vocab_size=32,
        train_slices=((24, 2),),
        eval_slices=((24, 2),),
        num_eval_examples=8,
    )
    pol = {"full": None, "trimkv": RetentionEviction(budget=6)}
    acc = recall_under_budget(tiny_lm(), cfg, 24, 2, pol, batch_size=8)
    assert set(acc) == {"full", "trimkv"} and all(0.0 <= a <= 1.0 for a in acc.values())
    by_depth = recall_by_depth(tiny_lm(), cfg, 24, (0.0, 100.0), pol, batch_size=8)
    assert set(by_depth["trimkv"]) == {0.0, 100.0}
    with pytest.raises(ValueError, match="task='needle'"):
        recall_by_depth(tiny_lm(), DataConfig(), 24, (0.0,), pol)
