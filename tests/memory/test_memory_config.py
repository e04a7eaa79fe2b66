"""Bad configurations fail at construction with a ValueError naming the field."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from memarch.memory import MemoryConfig, make_bias, make_retention, make_spec, memory_forward
from memarch.memory.engine import WriteGates


@pytest.mark.parametrize(
    "options,field",
    [
        ({"bias": "cosine"}, "bias"),
        ({"retention": "forget"}, "retention"),
        ({"rule": "adam"}, "rule"),
        ({"structure": "transformer"}, "structure"),
        ({"activation": "swish"}, "activation"),
        ({"impl": "pallas"}, "impl"),
        ({"p": 0.5}, "p"),
        ({"q": 1.0}, "q"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": -4}, "chunk_size"),
        ({"chunk_size": 2.0}, "chunk_size"),
        ({"theta_max": 2.0}, "theta_max"),  # an l2 write overshoots: divergent by construction
        ({"theta_init": 0.5, "theta_max": 0.4}, "theta_init"),
        ({"momentum_max": 1.0}, "momentum_max"),  # the surprise never decays
        ({"momentum_init": 0.95, "momentum_max": 0.9}, "momentum_init"),
        ({"forget_init": 1.0}, "forget_init"),
        ({"depth": 0}, "depth"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"structure": "mlp", "channelwise_forget": True}, "channelwise_forget"),
    ],
)
def test_bad_config_names_the_field(options, field):
    with pytest.raises(ValueError, match=f"^{field} "):
        MemoryConfig(**options)


def test_registries_reject_unknown_names_and_ranges():
    with pytest.raises(ValueError, match="bias must be one of"):
        make_bias("l3")
    with pytest.raises(ValueError, match="p \\(the lp bias exponent\\)"):
        make_bias("lp", p=0.0)
    with pytest.raises(ValueError, match="retention must be one of"):
        make_retention("l1")
    with pytest.raises(ValueError, match="q \\(the lq retention exponent\\)"):
        make_retention("lq", q=0.5)


def test_chunk_impl_refuses_packed_sequences():
    spec = make_spec(MemoryConfig(chunk_size=4))
    x = jnp.zeros((1, 6, 1, 2))
    g = WriteGates(lr=jnp.ones((1, 6, 1)))
    with pytest.raises(ValueError, match="impl='chunk' cannot run segment_ids"):
        memory_forward(
            spec,
            {"W": jnp.zeros((1, 2, 2))},
            x,
            x,
            x,
            g,
            impl="chunk",
            segment_ids=jnp.zeros((1, 6), jnp.int32),
        )
