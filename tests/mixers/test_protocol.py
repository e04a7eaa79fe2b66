"""Protocol invariants, run for every registered mixer (new mixers are picked up by name)."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from memarch import mixers
from memarch.mixers import conformance

D_MODEL, HEADS = 32, 2

# Small settings that make each mixer's special paths run on short sequences.
OPTIONS = {
    "swa": {"window": 5},
    "attention": {"short_conv": 3},
    "fox": {"rope": True, "num_kv_heads": 1, "forget_tau": (2.0, 20.0)},
    "trimkv": {"gate_bias": 1.0, "gate_hidden": 16, "window": 9},
    "titans_mag": {"window": 5, "persistent_tokens": 2},
    "titans_mal": {"window": 5, "persistent_tokens": 2},
    "titans_mac": {"segment_size": 16, "persistent_tokens": 2},
}
RECURRENT_OPTIONS = {"chunk_size": 16}
# Float32 tolerance of the cache / packing comparisons (default 1e-5). Memora's memory weights
# are row-softmax projections (rows summing to their length) read through a LayerNorm, which
# amplifies float32 rounding between the chunk form and the token path to ~3e-5; the forms
# agree to ~1e-13 in float64 (tests/memory/test_engine.py).
TOL = {"memora": 1e-4}


def make(name, **extra):
    opts = dict(OPTIONS.get(name, {}))
    fields = {f for f in mixers.config_class(name).__dataclass_fields__}
    opts.update({k: v for k, v in RECURRENT_OPTIONS.items() if k in fields})
    opts.update(extra)
    return mixers.build(name, d_model=D_MODEL, num_heads=HEADS, rngs=nnx.Rngs(0), **opts)


def inputs(b, t, seed=1):
    return jax.random.normal(jax.random.key(seed), (b, t, D_MODEL), jnp.float32)


@pytest.fixture(params=mixers.available())
def name(request):
    return request.param


def test_prefill_then_decode_equals_full(name):
    # prefill nothing (decode from the start), one token, and 21 (crossing chunk 16)
    conformance.check_decode_matches_full(
        make(name), inputs(2, 37), [0, 1, 21], tol=TOL.get(name, 1e-5)
    )


def test_packed_equals_separate(name):
    # lengths cross chunk boundaries (chunk 16), include a length-1 segment and the window
    conformance.check_packed_matches_separate(
        make(name), inputs(1, 45), [16, 1, 20, 8], tol=TOL.get(name, 1e-5)
    )


def test_causal_with_outputs_of_the_input_shape_and_dtype(name):
    # (and no cache returned from a call without one)
    y = conformance.check_causal(make(name), inputs(2, 30), 13)
    assert y.shape == (2, 30, D_MODEL) and y.dtype == jnp.float32


def test_gradients_finite(name):
    conformance.check_gradients_finite(make(name), inputs(2, 20))


def test_rejects_bad_input(name):
    m = make(name)
    with pytest.raises(ValueError, match="x must have shape"):
        m(jnp.zeros((2, 5, D_MODEL + 1)))
    with pytest.raises(ValueError, match="segment_ids"):
        m(inputs(2, 5), segment_ids=jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="cannot be combined with a decode cache"):
        m(
            inputs(2, 5),
            cache=m.init_cache(2, 5, jnp.float32),
            segment_ids=jnp.zeros((2, 5), jnp.int32),
        )


def test_conformance_checks_catch_a_broken_mixer():
    """The checks must be able to fail: a mixer that peeks one token ahead is caught."""

    class Peek(nnx.Module):
        def __call__(self, x, *, cache=None, segment_ids=None):
            return x + jnp.roll(x, -1, axis=1), cache

        def init_cache(self, b, t, dtype):
            return None

    with pytest.raises(AssertionError, match="causality"):
        conformance.check_causal(Peek(), inputs(1, 8), 4)
