"""Titans / Miras mixers: each preset is the documented configuration of the memory engine,
options are validated, the gates start at their configured values, and (MAC) information
crosses segments only through the memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch import mixers
from memarch.models.pattern import parse_pattern

PRESETS = {  # name -> (structure, bias, retention, momentum)
    "titans_lmm": ("mlp", "l2", "decay", True),
    "moneta": ("mlp", "lp", "lq", False),
    "yaad": ("mlp", "huber_norm", "decay", False),
    "memora": ("mlp", "l2", "kl_softmax", False),
    "neural_memory": ("linear", "l2", "decay", True),
}


def build(name, **options):
    return mixers.build(name, d_model=16, num_heads=2, rngs=nnx.Rngs(0), **options)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_configurations_of_the_engine(name):
    spec = build(name).spec
    structure, bias, retention, momentum = PRESETS[name]
    cfg = mixers.config_class(name)()
    assert (spec.structure.name, cfg.bias, spec.retention.name, spec.momentum) == (
        structure,
        bias,
        retention,
        momentum,
    )


def test_moneta_defaults_follow_the_paper():
    cfg = mixers.config_class("moneta")()
    assert (cfg.p, cfg.q) == (3.0, 4.0)


@pytest.mark.parametrize(
    "name,options,field",
    [
        ("titans_lmm", {"chunk_size": 0}, "chunk_size"),
        ("moneta", {"p": 0.9}, "p"),
        ("moneta", {"q": 1.0}, "q"),
        ("yaad", {"bias": "huberr"}, "bias"),
        ("memora", {"retention": "kl"}, "retention"),
        ("neural_memory", {"rule": "sgd"}, "rule"),
        ("titans_lmm", {"theta_max": 2.5}, "theta_max"),
        ("titans_mag", {"window": 0}, "window"),
        ("titans_mac", {"segment_size": 24, "chunk_size": 16}, "segment_size"),
    ],
)
def test_bad_options_name_the_field(name, options, field):
    with pytest.raises(ValueError, match=f"^{field} "):
        build(name, **options)


def test_gates_start_at_their_initial_values():
    m = build("titans_lmm", theta_init=0.2, theta_max=0.5, momentum_init=0.6, forget_init=0.05)
    g = m.gates(jnp.zeros((1, 3, 16)))
    np.testing.assert_allclose(np.asarray(g.lr), 0.2, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(jnp.exp(g.log_momentum)), 0.6, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(1 - jnp.exp(g.log_keep)), 0.05, rtol=1e-4)


def test_pattern_letter_and_names():
    assert parse_pattern("TT") == ["titans_lmm", "titans_lmm"]
    assert parse_pattern("moneta,yaad,memora,titans_mac") == [
        "moneta",
        "yaad",
        "memora",
        "titans_mac",
    ]


def test_mac_segments_communicate_only_through_the_memory():
    """With the memory's learning rate at (almost) zero and no decay (a data-dependent decay
    also carries information), a later segment cannot see an earlier one; with a working
    memory it does."""
    x = jax.random.normal(jax.random.key(0), (1, 16, 16))
    x2 = x.at[:, :4].add(1.0)  # perturb the first segment only
    deltas = {}
    for theta in (1e-9, 0.5):
        m = build(
            "titans_mac",
            segment_size=8,
            chunk_size=4,
            theta_init=theta,
            theta_max=0.9,
            short_conv=0,
            retention="none",
        )
        y1, _ = m(x)
        y2, _ = m(x2)
        deltas[theta] = float(jnp.max(jnp.abs(y1[:, 8:] - y2[:, 8:])))
    assert deltas[1e-9] < 1e-6 < 1e-3 < deltas[0.5]
