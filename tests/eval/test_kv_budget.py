"""Recall-under-budget evaluation: full-cache decoding reproduces the full forward; a budget
changes only what the decode caches keep; policies swap without touching the parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from memarch.eval.kv_budget import decode_logits, recall_under_budget, with_eviction
from memarch.kvcache import RetentionEviction, StreamingLLM
from memarch.models.lm import LM, LMConfig
from memarch.testing import assert_close
from memarch.train.config import DataConfig


def tiny_lm(pattern="KF"):
    opts = {"trimkv": {"gate_bias": 1.0, "gate_hidden": 8}, "fox": {"forget_bias": 2.0}}
    cfg = LMConfig(vocab_size=32, d_model=32, num_heads=2, pattern=pattern, mlp_hidden=0,
                   mixer_options=opts)
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
    cfg = DataConfig(vocab_size=32, train_slices=((24, 4),), eval_slices=((24, 4),),
                     num_train_examples=16, num_eval_examples=8)
    acc = recall_under_budget(tiny_lm(), cfg, 24, 4, {
        "full": None, "trimkv": RetentionEviction(budget=12)}, batch_size=8)
    assert set(acc) == {"full", "trimkv"} and all(0.0 <= a <= 1.0 for a in acc.values())


def test_with_eviction_needs_a_decay_attention_layer():
    with pytest.raises(ValueError, match="no decay-attention layer"):
        with_eviction(tiny_lm("A"), RetentionEviction(budget=4))
