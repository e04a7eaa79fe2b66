import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch.layers.mlp import SwiGLU


def test_swiglu_formula_and_default_width():
    mlp = SwiGLU(12, rngs=nnx.Rngs(0))
    assert mlp.up.out_features == 32  # 8/3 · 12 = 32, a multiple of 8
    x = jax.random.normal(jax.random.key(1), (2, 3, 12))
    expected = (jax.nn.silu(x @ mlp.gate.kernel[...]) * (x @ mlp.up.kernel[...])) @ mlp.down.kernel[
        ...
    ]
    np.testing.assert_allclose(mlp(x), expected, rtol=1e-5, atol=1e-6)
    assert jnp.all(jnp.isfinite(mlp(x)))
