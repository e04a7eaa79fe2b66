"""Outer gradients flow through the inner updates (second order) and match finite
differences in float64, for both forms; the chunked form's gradient equals the scan's."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from jax.test_util import check_grads
from memory_cases import CONFIGS, inputs

from memarch.memory import memory_forward
from memarch.testing import assert_close


def _loss_fn(spec, impl, q, k, v, g):
    def loss(init, lr, wq):
        y, _ = memory_forward(spec, init, q @ wq, k, v, g.replace(lr=lr), impl=impl)
        return jnp.sum(jnp.sin(y))

    return loss


@pytest.mark.parametrize("name", ["mlp_l2_decay_momentum", "linear_l2_decay_momentum"])
def test_gradients_match_finite_differences_float64(name):
    with jax.enable_x64(True):
        cfg = dataclasses.replace(CONFIGS[name], chunk_size=3)
        spec, init, q, k, v, g = inputs(cfg, b=1, t=7, h=1, d=3, dtype=jnp.float64)
        wq = jnp.eye(3, dtype=jnp.float64) + 0.1
        loss = jax.jit(_loss_fn(spec, "chunk", q, k, v, g))
        check_grads(loss, (init, g.lr, wq), order=1, modes=["rev"], atol=1e-6, rtol=1e-6, eps=1e-6)
        grads_chunk = jax.grad(loss, argnums=(0, 1, 2))(init, g.lr, wq)
        grads_scan = jax.grad(_loss_fn(spec, "naive", q, k, v, g), argnums=(0, 1, 2))(
            init, g.lr, wq
        )
    for a, b in zip(jax.tree.leaves(grads_chunk), jax.tree.leaves(grads_scan), strict=True):
        assert_close("chunk vs scan gradient", a, b, 1e-10, atol=0.0)
