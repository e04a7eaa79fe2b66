"""Every entry of the memory registries (built-in or user-registered) runs through the engine.

Parametrised over each registry's ``available()``: a new built-in retention, bias, structure,
learning rule or activation is tested here without a new test. The chunked form at chunk size
1 must equal the exact token-by-token form and be finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from memory_cases import inputs, memory_forward

from memarch.memory import BIASES, RETENTIONS, RULES, STRUCTURES, MemoryConfig
from memarch.memory.retention import register_retention, unregister_retention
from memarch.memory.structures import ACTIVATIONS
from memarch.testing import assert_close

USER_RETENTION = "t_user_tanh"  # a retention registered by this test module


@pytest.fixture(scope="module", autouse=True)
def user_retention():
    register_retention(USER_RETENTION)(lambda a: 2.0 * jnp.tanh(a / 2.0))
    yield
    unregister_retention(USER_RETENTION)


def _axis_cases():
    register_retention(USER_RETENTION)(lambda a: a)  # so that collection lists it too
    try:
        cases = [("retention", n) for n in RETENTIONS.available()]
    finally:
        unregister_retention(USER_RETENTION)
    cases += [("bias", n) for n in BIASES.available()]
    cases += [("rule", n) for n in RULES.available()]
    cases += [("structure", n) for n in STRUCTURES.available()]
    cases += [("activation", n) for n in ACTIVATIONS.available()]
    return cases


@pytest.mark.parametrize("field,name", _axis_cases(), ids=lambda v: str(v))
def test_every_registered_entry_runs_both_forms_alike(field, name):
    base = {"structure": "mlp", "expansion": 1.0} if field == "activation" else {}
    cfg = MemoryConfig(chunk_size=1, **{**base, field: name})
    spec, init, q, k, v, g = inputs(cfg, t=6)
    y_chunk, _ = memory_forward(spec, init, q, k, v, g, impl="chunk")
    y_scan, _ = memory_forward(spec, init, q, k, v, g, impl="naive")
    assert np.all(np.isfinite(np.asarray(y_chunk)))
    assert_close(f"{field}={name}: chunk-1 vs online", y_chunk, y_scan, 1e-4)


def test_user_retention_shares_the_registry_with_the_builtins():
    assert USER_RETENTION in RETENTIONS.available()
    assert set(RETENTIONS.builtins()) == {"none", "decay", "lq", "kl_softmax", "elastic_net"}
    assert RETENTIONS.metadata(USER_RETENTION)["decays"]
    assert MemoryConfig(retention=USER_RETENTION).retention == USER_RETENTION
    with pytest.raises(ValueError, match="already registered"):
        register_retention("lq", replace=True)(lambda a: a)
    assert jax.tree.leaves(RETENTIONS.get(USER_RETENTION)()(jnp.zeros((2, 2))))
