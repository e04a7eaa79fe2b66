import jax
import jax.numpy as jnp
import numpy as np

from memarch.layers.norms import GatedRMSNorm, RMSNorm


def test_rmsnorm_unit_rms_and_scale():
    x = jax.random.normal(jax.random.key(0), (3, 5, 16)) * 7.0
    norm = RMSNorm(16)
    y = norm(x)
    np.testing.assert_allclose(jnp.sqrt(jnp.mean(y**2, -1)), 1.0, rtol=1e-4)
    norm.scale[...] = 2.0 * jnp.ones(16)
    np.testing.assert_allclose(norm(x), 2.0 * y, rtol=1e-6)


def test_rmsnorm_keeps_bf16():
    assert RMSNorm(8)(jnp.ones((2, 8), jnp.bfloat16)).dtype == jnp.bfloat16


def test_gated_rmsnorm_is_norm_times_silu_gate():
    o = jax.random.normal(jax.random.key(1), (4, 8))
    g = jax.random.normal(jax.random.key(2), (4, 8))
    np.testing.assert_allclose(GatedRMSNorm(8)(o, g), RMSNorm(8)(o) * jax.nn.silu(g), rtol=1e-6)
