import jax.numpy as jnp
import numpy as np
import pytest

from memarch.train.config import OptimConfig
from memarch.train.optimizer import decay_mask, make_schedule


def test_warmup_then_cosine():
    s = make_schedule(OptimConfig(learning_rate=1.0, warmup_steps=10, end_lr_ratio=0.1), 110)
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(5)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(s(10)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(s(60)), 0.55, rtol=1e-5)  # half way down the cosine
    np.testing.assert_allclose(float(s(110)), 0.1, rtol=1e-5)


def test_constant_after_warmup():
    s = make_schedule(OptimConfig(learning_rate=2.0, warmup_steps=4, schedule="constant"), 50)
    np.testing.assert_allclose([float(s(i)) for i in (2, 4, 40)], [1.0, 2.0, 2.0], rtol=1e-6)


def test_unknown_schedule():
    with pytest.raises(ValueError, match=r"optim.schedule must be one of \['cosine', 'constant'\]"):
        make_schedule(OptimConfig(schedule="linear"), 10)


def test_decay_mask_spares_vectors():
    mask = decay_mask({"w": jnp.zeros((3, 4)), "scale": jnp.zeros(4), "b": jnp.zeros(())})
    assert mask == {"w": True, "scale": False, "b": False}
