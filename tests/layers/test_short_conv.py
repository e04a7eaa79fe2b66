import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch.layers.short_conv import ShortConv


def reference(x, w):
    """y_t = Σ_j w_j x_{t-j} with zero history, by explicit loops."""
    b, t, c = x.shape
    y = np.zeros_like(x)
    for i in range(t):
        for j in range(w.shape[0]):
            if i - j >= 0:
                y[:, i] += w[j] * x[:, i - j]
    return y


def test_matches_loop_reference():
    conv = ShortConv(6, 4, activation="identity", rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 9, 6)))
    y, cache = conv(jnp.asarray(x))
    np.testing.assert_allclose(y, reference(x, np.asarray(conv.weight[...])), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cache, x[:, -3:])


def test_cache_continues_the_sequence():
    conv = ShortConv(5, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (2, 10, 5))
    full, _ = conv(x)
    y1, c = conv(x[:, :4], cache=conv.init_cache(2, jnp.float32))
    outs = [y1]
    for t in range(4, 10):
        y, c = conv(x[:, t : t + 1], cache=c)
        outs.append(y)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-5, atol=1e-6)


def test_segments_do_not_leak():
    conv = ShortConv(3, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (1, 8, 3))
    seg = jnp.array([[0, 0, 0, 5, 5, 5, 5, 5]])
    packed, _ = conv(x, segment_ids=seg)
    a, _ = conv(x[:, :3])
    b, _ = conv(x[:, 3:])
    np.testing.assert_allclose(packed, jnp.concatenate([a, b], 1), rtol=1e-6)


@pytest.mark.parametrize(
    "kw,match",
    [({"kernel_size": 0}, "kernel_size"), ({"activation": "gelu"}, "activation must be one of")],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ShortConv(4, **{"kernel_size": 4, **kw}, rngs=nnx.Rngs(0))


def test_bias_is_added_before_the_activation():
    conv = ShortConv(6, 3, activation="identity", bias=True, rngs=nnx.Rngs(0))
    conv.bias[...] = jnp.arange(6, dtype=jnp.float32)
    x = np.asarray(jax.random.normal(jax.random.key(4), (2, 5, 6)))
    y, _ = conv(jnp.asarray(x))
    want = reference(x, np.asarray(conv.weight[...])) + np.arange(6)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    silu = ShortConv(6, 3, bias=True, rngs=nnx.Rngs(0))
    silu.bias[...] = conv.bias[...]
    np.testing.assert_allclose(silu(jnp.asarray(x))[0], jax.nn.silu(y), rtol=1e-5, atol=1e-6)
    assert ShortConv(6, 3, rngs=nnx.Rngs(0)).bias is None
