import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memarch.layers.rope import apply_rope, segment_positions


def test_segment_positions_restart_at_each_segment():
    seg = jnp.array([[7, 7, 7, 2, 2, 7], [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(segment_positions(seg), [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])


def test_rope_preserves_norm_and_is_relative():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))

    def score(pq, pk):
        rq = apply_rope(q, jnp.array([[pq]]))
        rk = apply_rope(k, jnp.array([[pk]]))
        return float(jnp.sum(rq * rk))

    np.testing.assert_allclose(
        jnp.linalg.norm(apply_rope(q, jnp.array([[5]]))), jnp.linalg.norm(q), rtol=1e-6
    )
    np.testing.assert_allclose(score(3, 1), score(12, 10), rtol=1e-5)  # depends on pq - pk only
    assert abs(score(3, 1) - score(3, 2)) > 1e-4
    np.testing.assert_allclose(apply_rope(q, jnp.array([[0]])), q)


def test_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even head dimension"):
        apply_rope(jnp.zeros((1, 2, 1, 5)), jnp.zeros((1, 2), jnp.int32))
