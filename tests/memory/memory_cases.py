"""Shared tiny inputs for the memory-engine tests (random q, k, v and bounded gates)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memarch.memory import MemoryConfig, WriteGates, make_spec
from memarch.memory import memory_forward as _memory_forward

# jit-compiled engine (one compilation per shape instead of op-by-op dispatch)
memory_forward = jax.jit(_memory_forward, static_argnames=("spec", "impl"))


def inputs(cfg: MemoryConfig, *, b=2, t=13, h=2, d=4, seed=0, theta=0.3, dtype=jnp.float32):
    """(spec, init [H, ...], q, k (unit norm), v, gates) for config ``cfg``."""
    spec = make_spec(cfg)
    ks = jax.random.split(jax.random.key(seed), 9)
    init = jax.vmap(lambda kk: spec.structure.init(kk, d, d))(jax.random.split(ks[0], h))
    if spec.structure.linear:  # a non-empty initial matrix memory makes the tests sharper
        init = {"W": 0.3 * jax.random.normal(ks[8], (h, d, d))}
    init = jax.tree.map(lambda x: x.astype(dtype), init)
    q = jax.random.normal(ks[1], (b, t, h, d), dtype)
    k = jax.random.normal(ks[2], (b, t, h, d), dtype)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(ks[3], (b, t, h, d), dtype)
    n = lambda i, shape: jax.random.normal(ks[i], shape, dtype)  # noqa: E731
    keep_shape = (b, t, h, d) if cfg.channelwise_forget else (b, t, h)
    gates = WriteGates(
        lr=theta * jax.nn.sigmoid(n(4, (b, t, h))),
        log_momentum=jnp.log(0.9 * jax.nn.sigmoid(n(5, (b, t, h)))) if spec.momentum else None,
        log_keep=jax.nn.log_sigmoid(2.0 + n(6, keep_shape)) if spec.retention.decays else None,
        delta=0.5 + jax.nn.softplus(n(7, (b, t, h))),
    )
    return spec, init, q, k, v, gates


# One config per (structure, bias, retention, rule) corner the forms must agree on.
CONFIGS = {
    "linear_l2_decay_momentum": MemoryConfig(structure="linear", rule="momentum"),
    "linear_l2_chan_gd": MemoryConfig(structure="linear", rule="gd", channelwise_forget=True),
    "linear_dot_none_gd": MemoryConfig(structure="linear", bias="dot", retention="none", rule="gd"),
    "mlp_l2_decay_momentum": MemoryConfig(
        structure="mlp", depth=2, expansion=2.0, activation="tanh"
    ),
    "mlp1_huber_decay_gd": MemoryConfig(structure="mlp", depth=1, bias="huber", rule="gd"),
    "moneta": MemoryConfig(structure="mlp", expansion=2.0, bias="lp", retention="lq", rule="gd"),
    "yaad": MemoryConfig(structure="mlp", expansion=2.0, bias="huber_norm", rule="gd"),
    "memora": MemoryConfig(structure="mlp", expansion=2.0, retention="kl_softmax", rule="gd"),
    "linear_lp_elastic_momentum": MemoryConfig(bias="lp", retention="elastic_net"),
    "linear_clamped": MemoryConfig(max_grad_norm=0.3),
    "mlp_clamped": MemoryConfig(structure="mlp", expansion=1.0, max_grad_norm=0.3),
}
