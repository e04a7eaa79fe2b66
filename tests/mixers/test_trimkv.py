"""TRIM-KV mixer: β ≡ 1 (or gates off) is plain attention; the bias is (t − i)·log β_i per KV
head; the capacity loss is sown; gate init and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch import mixers
from memarch.kvcache import capacity_loss, trimkv_gates_enabled
from memarch.models.forward import collect_intermediates
from memarch.ops import decay_attention
from memarch.testing import assert_close

D, H = 32, 4


def x_in(b=2, t=17):
    return jax.random.normal(jax.random.key(3), (b, t, D), jnp.float32)


def build(name="trimkv", **opts):
    return mixers.build(name, d_model=D, num_heads=H, rngs=nnx.Rngs(0), **opts)


@pytest.mark.parametrize("num_kv_heads", [4, 1])
def test_unit_retention_equals_plain_attention(num_kv_heads):
    x = x_in()
    att = build("attention", num_kv_heads=num_kv_heads)
    trim = build(num_kv_heads=num_kv_heads, gate_bias=1e4, gate_hidden=8)
    assert float(jnp.max(jnp.abs(trim._gates(x)[1]))) == 0.0  # log β = 0 exactly
    assert_close("β ≡ 1", trim(x)[0], att(x)[0], 1e-5)
    leaky = build(num_kv_heads=num_kv_heads, gate_bias=0.0, gate_hidden=8)
    assert float(jnp.max(jnp.abs(leaky(x)[0] - att(x)[0]))) > 1e-3
    with trimkv_gates_enabled(leaky, False):  # the distillation teacher
        assert_close("gates off", leaky(x)[0], att(x)[0], 1e-5)
    assert leaky.use_retention_gates


def test_gate_shape_init_and_bias():
    m = build(num_kv_heads=2, gate_bias=18.0, gate_hidden=8)
    x = x_in()
    _, log_beta = m._gates(x)
    assert log_beta.shape == (2, 17, 2) and log_beta.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(log_beta))) < 1e-6  # β ≈ 1 at init
    # the forward is the op with key_slope = log β shared by each KV head's query heads
    m = build(num_kv_heads=2, gate_bias=0.5, gate_hidden=8)
    _, log_beta = m._gates(x)
    q, k, v, _ = m._project(x, jnp.broadcast_to(jnp.arange(17), (2, 17)))
    o = decay_attention(q, k, v, key_slope=log_beta, impl="naive")
    assert_close("mixer vs op", m(x)[0], m.o_proj(o.reshape(2, 17, -1)), 1e-5)


def test_capacity_loss_is_sown_in_training_only():
    m = build(gate_bias=0.5, gate_hidden=8, capacity_budget=3.0, capacity_weight=2.0)
    x = x_in()
    _, inter = nnx.capture(lambda mm: mm(x), nnx.Intermediate)(m)
    aux, _ = collect_intermediates(inter)
    want = 2.0 * capacity_loss(m._gates(x)[1], 3.0)
    assert float(want) > 0
    np.testing.assert_allclose(float(aux), float(want), rtol=1e-6)
    _, inter = nnx.capture(
        lambda mm: mm(x[:, :4], cache=mm.init_cache(2, 8, jnp.float32)), nnx.Intermediate
    )(m)
    assert float(collect_intermediates(inter)[0]) == 0.0


@pytest.mark.parametrize(
    "options,match",
    [
        ({"gate_hidden": 0}, "gate_hidden"),
        ({"capacity_budget": 0.0}, "capacity_budget"),
        ({"window": -2}, "window must be a positive int"),
    ],
)
def test_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        build(**options)
