import jax.numpy as jnp
import numpy as np

from memarch.data.mqar import IGNORE_INDEX
from memarch.train.step import masked_cross_entropy


def test_masked_cross_entropy_ignores_unlabelled_positions():
    logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))
    targets = jnp.array([[IGNORE_INDEX, 0, 1]])
    loss, m = masked_cross_entropy(logits, targets)
    np.testing.assert_allclose(loss, -(np.log(0.9) + np.log(0.8)) / 2, rtol=1e-6)
    assert float(m["accuracy"]) == 1.0 and int(m["tokens"]) == 2
