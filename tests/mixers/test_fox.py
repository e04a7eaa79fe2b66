"""FoX mixer: f ≡ 1 is plain causal attention; the forget gate matches the op; init; errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch import mixers
from memarch.mixers.fox import fixed_decay_bias
from memarch.testing import assert_close

D, H = 32, 4


def x_in(b=2, t=17):
    return jax.random.normal(jax.random.key(3), (b, t, D), jnp.float32)


@pytest.mark.parametrize("num_kv_heads", [2])
def test_unit_forget_gates_equal_plain_attention(num_kv_heads):
    """b = 1e4 makes f = σ(w·x + b) = 1 in float32: FoX reduces to causal attention (same
    projection weights from the same seed)."""
    opts = dict(num_kv_heads=num_kv_heads, rope=True)
    fox = mixers.build("fox", d_model=D, num_heads=H, rngs=nnx.Rngs(0), forget_bias=1e4, **opts)
    att = mixers.build("attention", d_model=D, num_heads=H, rngs=nnx.Rngs(0), **opts)
    x = x_in()
    assert float(jnp.max(jnp.abs(fox._gates(x)[0]))) == 0.0
    assert_close("fox(f=1) vs attention", fox(x)[0], att(x)[0], 1e-5)
    # and the gate matters when it is not 1
    fox2 = mixers.build("fox", d_model=D, num_heads=H, rngs=nnx.Rngs(0), **opts)
    assert float(jnp.max(jnp.abs(fox2(x)[0] - att(x)[0]))) > 1e-3


def test_fixed_decay_init():
    fox = mixers.build("fox", d_model=D, num_heads=H, rngs=nnx.Rngs(0), forget_tau=(2.0, 64.0))
    b = np.asarray(fox.fgate.bias[...])
    np.testing.assert_allclose(1 / (1 + np.exp(-b)), np.exp(-1 / np.geomspace(2, 64, H)), rtol=1e-5)
    np.testing.assert_allclose(b, fixed_decay_bias(H, 2.0, 64.0), rtol=1e-6)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"forget_tau": (0.0, 4.0)}, "forget_tau"),
        ({"window": 0}, "window must be a positive int"),
        ({"impl": "flash"}, "impl must be one of"),
    ],
)
def test_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        mixers.build("fox", d_model=D, num_heads=H, rngs=nnx.Rngs(0), **options)
