"""Mixer-level checks of the gated linear-attention family (beyond the protocol invariants)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch import mixers
from memarch.testing import assert_close

D, H = 32, 2


def build(name, **opts):
    return mixers.build(name, d_model=D, num_heads=H, rngs=nnx.Rngs(0), **opts)


def x_in(t=40, b=2):
    return jax.random.normal(jax.random.key(3), (b, t, D))


@pytest.mark.parametrize("name", ["gla", "deltanet", "gated_deltanet", "hgrn2", "linear_attention"])
def test_chunk_equals_naive_inside_the_mixer(name):
    m_chunk = build(name, impl="chunk", chunk_size=16)
    m_naive = build(name, impl="naive")
    assert_close(f"{name} chunk vs naive", m_chunk(x_in())[0], m_naive(x_in())[0], 1e-5)


def test_gated_deltanet_initialisation():
    m = build("gated_deltanet")
    a = np.exp(np.asarray(m.A_log[...]))
    dt = np.asarray(jax.nn.softplus(m.dt_bias[...]))
    assert np.all((a > 0) & (a <= 16))
    assert np.all((dt >= 1e-3 * 0.999) & (dt <= 1e-1 * 1.001))
    g, beta = m.gates(x_in())
    assert g.shape == (2, 40, H) and beta.shape == (2, 40, H)
    assert bool(jnp.all(g <= 0)) and bool(jnp.all((beta > 0) & (beta < 1)))


def test_negative_eigenvalues_double_beta():
    plain, neg = build("deltanet"), build("deltanet", allow_neg_eigval=True)
    np.testing.assert_allclose(neg.beta(x_in()), 2 * plain.beta(x_in()), rtol=1e-6)


@pytest.mark.parametrize("gate,shape", [("channel", (2, 40, H, D // H)), ("head", (2, 40, H))])
def test_gla_gate_shapes_and_range(gate, shape):
    (g,) = build("gla", gate=gate).gates(x_in())
    assert g.shape == shape and bool(jnp.all(g <= 0))


def test_gla_gate_clamp():
    (g,) = build("gla", gate_clamp_min=-0.01, gate_normalizer=0.01).gates(x_in())
    assert float(g.min()) >= -0.01 - 1e-7


def test_gla_gate_bias_init_sets_initial_forgetting():
    x = jnp.zeros((1, 3, D))  # zero input: the gate is logsigmoid(b₂)/τ
    (g0,) = build("gla").gates(x)
    (g4,) = build("gla", gate_bias_init=4.0).gates(x)
    np.testing.assert_allclose(g0, jax.nn.log_sigmoid(0.0) / 16, rtol=1e-6)
    np.testing.assert_allclose(g4, jax.nn.log_sigmoid(4.0) / 16, rtol=1e-6)
    assert float(jnp.exp(g4).min()) > 0.998


def test_hgrn2_forget_lower_bound_and_tied_input_gate():
    m = build("hgrn2", forget_lower_bound=0.9)
    q = jnp.zeros((2, 40, H, m.key_dim))
    v = jnp.zeros((2, 40, H, m.value_dim))
    _, k, _, (g,) = m.prepare(x_in(), q, None, v)
    f = jnp.exp(g)
    assert float(f.min()) >= 0.9 - 1e-6
    np.testing.assert_allclose(k, 1 - f, rtol=1e-5, atol=1e-6)


def test_pattern_letters_for_the_family():
    assert {mixers.letters()[c] for c in "GDRH"} == {"gated_deltanet", "deltanet", "gla", "hgrn2"}


@pytest.mark.parametrize(
    "name,opts,match",
    [
        ("gla", {"gate": "vector"}, "gate must be one of"),
        ("gla", {"gate_rank": 0}, "gate_rank"),
        ("hgrn2", {"forget_lower_bound": 1.0}, "forget_lower_bound"),
        ("gated_deltanet", {"dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
        ("deltanet", {"impl": "fast"}, "impl must be one of"),
        ("deltanet", {"chunk_size": 0}, "chunk_size"),
        ("gla", {"short_conv": -1}, "short_conv"),
    ],
)
def test_bad_options(name, opts, match):
    with pytest.raises(ValueError, match=match):
        build(name, **opts)
