"""Model FLOPs of a step, counted from the config, checked against hand counts."""

import jax
import pytest

from memarch.compile.flops import model_flops
from memarch.models import LMConfig
from memarch.train.config import DataConfig, TrainConfig
from memarch.train.setup import make_setup


def _cfg(pattern, *, tie, mixers=None):
    model = LMConfig(
        vocab_size=64,
        d_model=32,
        num_heads=2,
        pattern=pattern,
        mlp_hidden=48,
        tie_embeddings=tie,
        mixers=mixers or {},
    )
    return TrainConfig(model=model, data=DataConfig(vocab_size=64), batch_size=3)


@pytest.mark.parametrize("tie", [True, False])
def test_dense_term_counts_every_matmul_parameter_once(tie):
    cfg = _cfg("A", tie=tie)
    params = make_setup(cfg).abstract_state()["params"]
    total = sum(x.size for x in jax.tree.leaves(params))
    f = model_flops(cfg, params, seq_len=10)
    # the embedding lookup is no matmul; a tied head multiplies by the same 64 × 32 table
    n = total - 64 * 32 + (64 * 32 if tie else 0)
    assert f.matmul_params == n and f.dense == 6 * n * 3 * 10


def test_attention_and_state_terms():
    cfg = _cfg("AL", tie=True, mixers={"attention": {"window": 4}})
    params = make_setup(cfg).abstract_state()["params"]
    f = model_flops(cfg, params, seq_len=10)
    # window 4 over 10 tokens: 1+2+3+4 then 6 × 4 = 34 pairs; 3 · 4 · B · H · d_head · pairs
    assert f.attention == 3 * 4 * 3 * 2 * 16 * 34
    # linear attention: a 16 × 16 state per head, 3 · 4 · tokens · H · d_k · d_v
    assert f.state == 3 * 4 * 30 * 2 * 16 * 16
    assert f.total == f.dense + f.attention + f.state
