"""The decay-gate registry (memarch.layers.decay_gates): built-in and user gates alike.

Parametrised over ``DECAY_GATES.available()`` (plus a gate registered here): every gate, in
every mixer that accepts it, yields a log decay ``g ≤ 0`` of the shape it declares.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch.layers.decay_gates import (
    DECAY_GATES,
    builtin_decay_gates,
    register_decay_gate,
    unregister_decay_gate,
    user_decay_gates,
)
from memarch.mixers import build

USER_GATE = "t_sigmoid_head"


class _SigmoidHead(nnx.Module):
    def __init__(self, *, d_model, num_heads, key_dim, rngs):
        self.proj = nnx.Linear(d_model, num_heads, rngs=rngs)

    def __call__(self, x):
        return jax.nn.log_sigmoid(self.proj(x).astype(jnp.float32) + 3.0)


@pytest.fixture(scope="module", autouse=True)
def user_gate():
    register_decay_gate(USER_GATE)(_SigmoidHead)
    yield
    unregister_decay_gate(USER_GATE)


def _cases():
    names = sorted({*DECAY_GATES.available(), USER_GATE})
    mixers_of = {n: ("gla", "gated_deltanet") for n in names}
    for n in DECAY_GATES.available():
        mixers_of[n] = DECAY_GATES.metadata(n)["mixers"]
    return [(n, m) for n in names for m in mixers_of[n]]


@pytest.mark.parametrize("name,mixer", _cases())
def test_every_gate_gives_a_bounded_log_decay_of_its_shape(name, mixer):
    m = build(mixer, d_model=32, num_heads=2, rngs=nnx.Rngs(0), gate=name, head_dim=8)
    x = jax.random.normal(jax.random.key(0), (2, 5, 32), jnp.float32)
    g = np.asarray(m.gates(x)[0])
    per_channel = DECAY_GATES.metadata(name)["per_channel"]
    assert g.shape == ((2, 5, 2, 8) if per_channel else (2, 5, 2))
    assert np.all(np.isfinite(g)) and np.all(g <= 0)


def test_builtins_and_user_gates_share_one_registry():
    assert builtin_decay_gates("gla") == ["channel", "head"]
    assert builtin_decay_gates("gated_deltanet") == ["mamba2"]
    assert user_decay_gates() == [USER_GATE] and DECAY_GATES.get(USER_GATE) is _SigmoidHead
    assert DECAY_GATES.get("mamba2") is None  # built into the mixer: no module
    with pytest.raises(ValueError, match="is not registered"):
        unregister_decay_gate("mamba2")
