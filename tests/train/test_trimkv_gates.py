"""TRIM-KV gate training on a tiny LM: only the gates move; the objective's parts; and decoding
under one global budget across layers and KV heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from memarch.kvcache import TRIMKV_GATE_PARAMS, RetentionEviction
from memarch.kvcache.global_budget import global_keep, total_kept
from memarch.models.lm import LM, LMConfig
from memarch.train.trimkv_gates import trimkv_gate_optimizer, trimkv_gate_step, trimkv_objective


def tiny_lm(**trim):
    opts = {"trimkv": {"gate_bias": 2.0, "gate_hidden": 8, "capacity_budget": 3.0, **trim}}
    cfg = LMConfig(vocab_size=16, d_model=32, num_heads=2, pattern="KA", mixers=opts)
    return LM(cfg, rngs=nnx.Rngs(0))


def batch():
    tok = jax.random.randint(jax.random.key(0), (2, 13), 0, 16)
    return {"inputs": tok[:, :-1], "targets": tok[:, 1:].at[0, :3].set(-100)}


def test_gate_only_step_moves_only_the_gates():
    model = tiny_lm()
    opt = trimkv_gate_optimizer(model, optax.adam(1e-2))
    before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    gates_before = nnx.to_pure_dict(nnx.state(model, TRIMKV_GATE_PARAMS))
    loss, metrics = trimkv_gate_step(model, opt, batch())
    assert np.isfinite(float(loss))
    assert float(metrics["kl"]) > 0 and float(metrics["capacity"]) > 0
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    gates_after = nnx.to_pure_dict(nnx.state(model, TRIMKV_GATE_PARAMS))
    n_gate = len(jax.tree.leaves(gates_before))
    assert n_gate == 4  # up.kernel, up.bias, down.kernel and the bias b of the one K layer
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    ]
    assert sum(changed) == n_gate  # exactly the gate parameters changed
    assert all(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(gates_before), jax.tree.leaves(gates_after), strict=True)
    )


def test_objective_kl_vanishes_without_gate_effect():
    model = tiny_lm(gate_bias=1e4)  # β ≡ 1: student == teacher
    loss, parts = nnx.jit(trimkv_objective)(model, batch())
    assert abs(float(parts["kl"])) < 1e-6 and float(parts["ntp"]) > 0


def test_global_budget_decoding():
    model = tiny_lm(eviction=RetentionEviction(budget=8))
    tok = batch()["inputs"]
    cache = model.init_cache(2, 12, jnp.float32)
    _, cache = model(tok[:, :6], cache=cache)
    budget = 5  # across 1 layer × 2 KV heads
    trim = [i for i, n in enumerate(model.layer_names) if n == "trimkv"]
    for t in range(6, 9):
        kept = global_keep([cache[i] for i in trim], budget)
        for i, c in zip(trim, kept, strict=True):
            cache[i] = c
        np.testing.assert_array_equal(np.asarray(total_kept(kept)), budget)
        logits, cache = model(tok[:, t : t + 1], cache=cache)
        assert np.all(np.isfinite(np.asarray(logits)))
    assert int(cache[trim[0]].length) == 9
