"""Checkpoint integrity: array checksums catch every single-word change, finiteness checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memarch.train import integrity


def _state():
    rng = np.random.default_rng(0)
    return {
        "params": {
            "w": jnp.asarray(rng.standard_normal((5, 7)), jnp.float32),
            "b": jnp.asarray(rng.standard_normal(7), jnp.bfloat16),
        },
        "step": jnp.asarray(12, jnp.int32),
        "rng": jax.random.key_data(jax.random.key(3)),
        "flag": jnp.asarray([True, False]),
    }


def test_checksums_name_every_array_and_are_deterministic():
    s = _state()
    a, b = integrity.state_checksums(s), integrity.state_checksums(jax.tree.map(jnp.copy, s))
    assert a == b
    assert set(a) == {"params/w", "params/b", "step", "rng", "flag"}
    assert all(len(v) == 16 for v in a.values())


@pytest.mark.parametrize("leaf", ["params/w", "params/b", "step", "rng", "flag"])
def test_any_single_word_change_is_caught(leaf):
    s = _state()
    recorded = integrity.state_checksums(s)
    path = leaf.split("/")
    x = np.asarray(s[path[0]] if len(path) == 1 else s[path[0]][path[1]]).copy()
    flat = x.reshape(-1)
    if flat.dtype == bool:
        flat[-1] = ~flat[-1]
    else:  # flip the lowest bit of the last element's bytes
        raw = flat.view(np.uint8)
        raw[-1] ^= 1
    if len(path) == 1:
        s[path[0]] = jnp.asarray(x)
    else:
        s[path[0]][path[1]] = jnp.asarray(x)
    assert integrity.verify_checksums(s, recorded) == [f"{leaf}: content changed"]


def test_swapped_elements_are_caught():
    s = _state()
    recorded = integrity.state_checksums(s)
    w = np.asarray(s["params"]["w"]).copy()
    w[0, 0], w[1, 3] = w[1, 3], w[0, 0]
    s["params"]["w"] = jnp.asarray(w)
    assert integrity.verify_checksums(s, recorded) == ["params/w: content changed"]


def test_missing_and_extra_arrays_are_named():
    s = _state()
    recorded = integrity.state_checksums(s)
    del s["flag"]
    s["extra"] = jnp.zeros(3)
    problems = integrity.verify_checksums(s, recorded)
    assert "extra: no recorded checksum" in problems
    assert "flag: recorded but not in the state" in problems


def test_signed_record_verifies_and_detects_edits():
    s = _state()
    record = integrity.sign_record({"step": 12, "config": {"a": 1}}, s)
    assert integrity.verify_record(record, s) == []
    edited = dict(record, config={"a": 2})
    assert integrity.verify_record(edited, s) == ["the JSON record's content changed"]
    assert "no checksums" in integrity.verify_record({"step": 12}, s)[0]


def test_nonfinite_arrays_are_named():
    s = _state()
    assert integrity.nonfinite_arrays(s) == []
    s["params"]["w"] = s["params"]["w"].at[2, 2].set(jnp.nan)
    s["params"]["b"] = s["params"]["b"].at[0].set(jnp.inf)
    assert sorted(integrity.nonfinite_arrays(s)) == ["params/b", "params/w"]
