import jax
import jax.numpy as jnp
from flax import nnx

from memarch.models.forward import collect_intermediates, forward


class Sower(nnx.Module):
    """A toy model that sows an auxiliary loss and a statistic, like a routed mixer does."""

    def __init__(self):
        self.w = nnx.Param(jnp.ones(()))

    def __call__(self, inputs, segment_ids=None):
        self.sow(nnx.Intermediate, "aux_loss", 0.5 * self.w[...] ** 2)
        self.sow(nnx.Intermediate, "router_entropy", jnp.array(2.0))
        return jnp.zeros(inputs.shape + (3,)) * self.w[...], None


def test_sown_aux_loss_reaches_the_loss_and_its_gradient():
    model = Sower()
    batch = {"inputs": jnp.zeros((1, 2), jnp.int32)}
    _, aux, stats = forward(model, batch)
    assert float(aux) == 0.5 and float(stats["router_entropy"]) == 2.0
    grad = nnx.grad(lambda m: forward(m, batch)[1])(model)
    assert float(grad["w"][...]) == 1.0


def test_collect_intermediates_sums_aux_over_layers_and_averages_stats():
    state = {
        "a": {"aux_loss": (jnp.array(1.0),), "load": (jnp.array(2.0),)},
        "b": {"aux_loss": (jnp.array(3.0),), "load": (jnp.array(4.0),)},
    }
    aux, stats = collect_intermediates(state)
    assert float(aux) == 4.0 and float(stats["load"]) == 3.0
    assert jax.tree.leaves(stats)
