"""The mixer options that match flash-linear-attention's layers (used by memarch.convert) pass
the protocol conformance checks: prefill + decode == full, packed == separate, causal, finite
gradients, and for the recurrent mixers chunk == naive."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from memarch import mixers
from memarch.mixers import conformance
from memarch.testing import assert_close

D, H = 32, 2

CASES = [
    ("gla", {"norm_eps": 1e-5, "conv_bias": True}),
    ("deltanet", {"short_conv": 0, "silu_v": True, "output_gate": False}),
    ("gated_deltanet", {"conv_bias": True, "norm_eps": 1e-5, "head_dim": 8}),
    (
        "hgrn2",
        {
            "conv_layout": "qfi",
            "norm_over": "all",
            "learned_lower_bound": True,
            "conv_bias": True,
        },
    ),
    ("hgrn2", {"short_conv": 0, "norm_over": "all", "learned_lower_bound": True}),
    ("gated_deltanet", {"qk_heads": 1, "head_dim": 8, "expand_v": 1.0}),
    ("linear_attention", {"feature_map": "hadamard", "short_conv": 0}),
    ("linear_attention", {"feature_map": "elu1", "normalize": True}),
    ("attention", {"num_heads": 4, "qkv_bias": True, "qk_norm": True, "norm_eps": 1e-5}),
    ("swa", {"num_heads": 1, "window": 8, "qkv_bias": True}),
    (
        "mom",
        {
            "num_memories": 3,
            "base": "hgrn2",
            # naive: the per-token scan, so the causality check sees no chunk-layout rounding
            "base_options": {
                "conv_layout": "qfi",
                "learned_lower_bound": True,
                "conv_bias": True,
                "impl": "naive",
            },
        },
    ),
]
IDS = [f"{n}-{'-'.join(o)}" for n, o in CASES]
RECURRENT = {"gla", "deltanet", "gated_deltanet", "hgrn2", "linear_attention"}


def _randomise(mixer, seed=0):
    """Non-trivial values for the parameters the options add (biases start at 0, the learned
    lower bound at a constant): conv / projection biases ~ N(0, 0.3), lower bound ~ U(0, 0.9)."""
    key = jax.random.key(seed)
    for path, var in nnx.iter_graph(mixer):
        if not isinstance(var, nnx.Param) or not path:
            continue
        key, sub = jax.random.split(key)
        if path[-1] == "lower_bound":
            var[...] = jax.random.uniform(sub, var.shape, jnp.float32, 0.0, 0.9)
        elif path[-1] == "bias":
            var[...] = 0.3 * jax.random.normal(sub, var.shape, jnp.float32)
    return mixer


def make(name, opts, **extra):
    opts = {**({"chunk_size": 16} if name in RECURRENT else {}), **opts, **extra}
    config = mixers.make_config(name, **opts)
    return _randomise(mixers.build(name, d_model=D, num_heads=H, rngs=nnx.Rngs(0), config=config))


def x_in(b, t, seed=1):
    return jax.random.normal(jax.random.key(seed), (b, t, D), jnp.float32)


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_protocol(name, opts):
    m = make(name, opts)
    conformance.check_decode_matches_full(m, x_in(2, 23), [13], tol=1e-5)
    conformance.check_packed_matches_separate(m, x_in(1, 23), [5, 1, 17], tol=1e-5)
    conformance.check_causal(m, x_in(2, 24), 11)
    conformance.check_gradients_finite(m, x_in(2, 12))


@pytest.mark.parametrize(
    "name,opts",
    [c for c in CASES if c[0] in RECURRENT],
    ids=[i for i, c in zip(IDS, CASES, strict=True) if c[0] in RECURRENT],
)
def test_chunk_equals_naive(name, opts):
    x = x_in(2, 40)
    chunk = make(name, opts, impl="chunk")(x)[0]
    naive = make(name, opts, impl="naive")(x)[0]
    assert_close(f"{name} chunk vs naive", chunk, naive, 1e-5)


@pytest.mark.parametrize(
    "name,opts",
    [
        ("gla", {"conv_bias": True}),
        ("gla", {"norm_eps": 0.5}),
        ("deltanet", {"short_conv": 0, "silu_v": True}),
        ("hgrn2", {"conv_layout": "qfi"}),
        ("hgrn2", {"norm_over": "all"}),
        ("hgrn2", {"learned_lower_bound": True}),
        ("attention", {"qkv_bias": True}),
        ("linear_attention", {"normalize": True}),
    ],
)
def test_each_option_changes_the_output(name, opts):
    """Same seed, option on vs off: the outputs differ (each option is wired in)."""
    x = x_in(2, 12)
    base = {"short_conv": 0} if "silu_v" in opts else {}
    off = make(name, base)(x)[0]
    on = make(name, {**base, **opts})(x)[0]
    assert float(jnp.max(jnp.abs(on - off))) > 1e-4


def test_attention_num_heads_option_sets_the_layer_heads():
    m = make("attention", {"num_heads": 4, "num_kv_heads": 2})
    assert (m.num_heads, m.num_kv_heads, m.head_dim) == (4, 2, D // 4)
    assert m.q_proj.kernel.shape == (D, D) and m.k_proj.kernel.shape == (D, D // 2)


@pytest.mark.parametrize(
    "name,opts,match",
    [
        ("hgrn2", {"conv_layout": "fi"}, "conv_layout must be one of"),
        ("hgrn2", {"norm_over": "heads"}, "norm_over must be one of"),
        ("gla", {"norm_eps": 0.0}, "norm_eps"),
        ("attention", {"num_heads": 0}, "num_heads"),
        ("linear_attention", {"feature_map": "hedgehog"}, "feature_map must be one of"),
        ("gated_deltanet", {"qk_heads": 3}, "qk_heads \\(3\\) must divide num_heads"),
        ("mom", {"base": "linear_attention", "base_options": {"normalize": True}}, "normalize"),
    ],
)
def test_bad_options(name, opts, match):
    with pytest.raises(ValueError, match=match):
        mixers.build(
            name, d_model=D, num_heads=H, rngs=nnx.Rngs(0), config=mixers.make_config(name, **opts)
        )
