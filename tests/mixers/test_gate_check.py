"""The decay-gate registry (memarch.layers.decay_gates) and the public gate checks
(memarch.mixers.conformance.check_gate / check_retention): they pass for the built-in gates and
for a well-formed new gate, and each deliberately broken gate is caught with a message naming
what is wrong."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch.layers import decay_gates
from memarch.memory.retention import register_retention, unregister_retention
from memarch.mixers import build, conformance


class _Base(nnx.Module):
    """A per-head gate ``log σ(W x + 3)``; subclasses break it in one way each."""

    def __init__(self, *, d_model, num_heads, key_dim, rngs):
        self.proj = nnx.Linear(d_model, num_heads, rngs=rngs)

    def logits(self, x):
        return self.proj(x).astype(jnp.float32) + 3.0

    def __call__(self, x):
        return jax.nn.log_sigmoid(self.logits(x))


class _Growing(_Base):  # log decay > 0 somewhere: the state grows
    def __call__(self, x):
        return 0.5 * jnp.tanh(self.logits(x))


class _RunningMean(_Base):  # causal but not token-local: decode sees one token only
    def __call__(self, x):
        z = self.logits(x)
        n = jnp.arange(1, x.shape[1] + 1, dtype=jnp.float32)[None, :, None]
        return jax.nn.log_sigmoid(jnp.cumsum(z, axis=1) / n)


class _DecodeDiffers(_Base):  # a different gate on the single-token (decode) path
    def __call__(self, x):
        g = jax.nn.log_sigmoid(self.logits(x))
        return 0.5 * g if x.shape[1] == 1 else g


class _PeeksAhead(_Base):  # g_t reads x_{t+1}: not causal
    def __call__(self, x):
        nxt = jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)
        return jax.nn.log_sigmoid(self.logits(x) + self.proj(nxt).astype(jnp.float32))


class _Frozen(_Base):  # the gate's parameters never receive a gradient
    def __call__(self, x):
        return jax.nn.log_sigmoid(jax.lax.stop_gradient(self.logits(x)))


class _NaN(_Base):  # log of a value that can be negative
    def __call__(self, x):
        return jnp.log(jnp.tanh(self.logits(x) - 3.0))


class _WrongShape(_Base):  # declared per head, returns one value per key channel
    def __call__(self, x):
        g = jax.nn.log_sigmoid(self.logits(x))
        return jnp.repeat(g[..., None], 8, axis=-1)


class _Channel(nnx.Module):  # a valid per-channel gate
    def __init__(self, *, d_model, num_heads, key_dim, rngs):
        self.proj = nnx.Linear(d_model, num_heads * key_dim, rngs=rngs)
        self.shape = (num_heads, key_dim)

    def __call__(self, x):
        g = jax.nn.log_sigmoid(self.proj(x).astype(jnp.float32) + 3.0)
        return g.reshape(*x.shape[:2], *self.shape)


_TEST_GATES = {
    "t_good": (_Base, False),
    "t_channel": (_Channel, True),
    "t_growing": (_Growing, False),
    "t_running_mean": (_RunningMean, False),
    "t_decode_differs": (_DecodeDiffers, False),
    "t_peeks_ahead": (_PeeksAhead, False),
    "t_frozen": (_Frozen, False),
    "t_nan": (_NaN, False),
    "t_wrong_shape": (_WrongShape, False),
}


@pytest.fixture(scope="module", autouse=True)
def registered():
    for name, (cls, per_channel) in _TEST_GATES.items():
        decay_gates.register_decay_gate(name, per_channel=per_channel)(cls)
    register_retention("t_tanh_clip")(lambda a: 2.0 * jnp.tanh(a / 2.0))
    register_retention("t_unit_norm")(lambda a: a / jnp.linalg.norm(a))  # NaN at A = 0
    register_retention("t_sqrt")(lambda a: jnp.sign(a) * jnp.sqrt(jnp.abs(a)))  # ∞ slope at 0
    yield
    for name in _TEST_GATES:
        decay_gates.unregister_decay_gate(name)
    for name in ("t_tanh_clip", "t_unit_norm", "t_sqrt"):
        unregister_retention(name)


def _mixer(name: str, gate: str, **options):
    return build(name, d_model=32, num_heads=2, rngs=nnx.Rngs(0), gate=gate, head_dim=8, **options)


def _x(t: int = 12, b: int = 2):
    return jax.random.normal(jax.random.key(1), (b, t, 32), jnp.float32)


# --- the registry ----------------------------------------------------------------------------


def test_default_gates_are_unchanged():
    """The built-in gates keep their parameters (names and values at a fixed seed)."""
    gdn = build("gated_deltanet", d_model=32, num_heads=2, rngs=nnx.Rngs(0))
    assert gdn.config.gate == "mamba2" and not hasattr(gdn, "decay_gate")
    assert gdn.A_log.shape == (2,) and gdn.dt_bias.shape == (2,) and gdn.a_proj is not None
    gla = build("gla", d_model=32, num_heads=2, rngs=nnx.Rngs(0))
    assert gla.config.gate == "channel" and gla.gate_up.kernel.shape == (16, 32)


def test_registered_gate_replaces_the_builtin_decay():
    m = _mixer("gated_deltanet", "t_good")
    assert not hasattr(m, "A_log") and isinstance(m.decay_gate, _Base)
    g, beta = m.gates(_x())
    np.testing.assert_allclose(g, m.decay_gate(_x()))
    assert g.shape == beta.shape == (2, 12, 2)


def test_registry_rejects_bad_names_and_options():
    with pytest.raises(ValueError, match=r"gate must be one of \['mamba2', .*'t_good'"):
        _mixer("gated_deltanet", "no_such_gate")
    with pytest.raises(ValueError, match="per key channel; gated_deltanet needs one decay per"):
        _mixer("gated_deltanet", "t_channel")
    with pytest.raises(ValueError, match="already registered"):
        decay_gates.register_decay_gate("t_good")(_Base)
    with pytest.raises(ValueError, match="built-in gate"):
        decay_gates.register_decay_gate("mamba2")(_Base)
    with pytest.raises(ValueError, match="nnx.Module subclass"):
        decay_gates.register_decay_gate("t_function")(lambda x: x)
    with pytest.raises(ValueError, match=r"must return shape \(2, 12, 2\); got \(2, 12, 2, 8\)"):
        _mixer("gla", "t_wrong_shape")(_x())
    with pytest.raises(ValueError, match="mixers must be among"):
        conformance.check_gate("t_good", mixers=["deltanet"])


# --- the checks pass -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mamba2", "channel"])
def test_check_gate_passes_builtin_gates(name):
    report = conformance.check_gate(name)
    for errs in report.values():
        assert errs["chunked vs naive recurrent: outputs"] < 1e-4
        assert errs["prefill+decode vs full"] < 1e-4


def test_check_gate_passes_a_new_gate_in_both_mixers():
    report = conformance.check_gate("t_good")
    assert set(report) == {"gla", "gated_deltanet"}
    assert conformance.check_gate("t_channel").keys() == {"gla"}


def test_check_retention_passes_a_new_retention():
    report = conformance.check_retention("t_tanh_clip", structures=("linear",))
    assert report["linear"]["chunk form vs token scan: outputs"] < 1e-4


# --- the checks catch broken gates ----------------------------------------------------------


@pytest.mark.parametrize(
    "name, message",
    [
        ("t_growing", r"log decay g must be <= 0 .* max g = 0\.\d+"),
        ("t_running_mean", "gate is not token-local"),
        ("t_decode_differs", "gate is not token-local"),
        ("t_peeks_ahead", "gate is not token-local"),
        ("t_frozen", "no gate parameter receives a gradient"),
        ("t_nan", "log decay g has non-finite values"),
    ],
)
def test_check_gate_catches_broken_gates(name, message):
    with pytest.raises(AssertionError, match=rf"check_gate\('{name}'\) in gla: {message}"):
        conformance.check_gate(name)


def test_protocol_checks_catch_what_the_token_locality_screen_catches():
    """Without the gate-level screen, the mixer-level checks still fail on these gates."""
    with pytest.raises(AssertionError, match="prefill 5 \\+ decode vs full"):
        conformance.check_decode_matches_full(_mixer("gla", "t_running_mean"), _x(), 5)
    with pytest.raises(AssertionError, match="prefill 5 \\+ decode vs full"):
        conformance.check_decode_matches_full(_mixer("gla", "t_decode_differs"), _x(), 5)
    with pytest.raises(AssertionError, match="causality"):
        conformance.check_causal(_mixer("gla", "t_peeks_ahead"), _x(), 6)


@pytest.mark.parametrize(
    "name, message",
    [
        ("t_unit_norm", "P\\(A\\) is not finite at A = 0"),
        ("t_sqrt", "the derivative of P is not finite at A = 0"),
    ],
)
def test_check_retention_catches_broken_retentions(name, message):
    with pytest.raises(AssertionError, match=rf"check_retention\('{name}'\): {message}"):
        conformance.check_retention(name)


def test_register_retention_validates():
    with pytest.raises(ValueError, match="already registered"):
        register_retention("lq")(lambda a: a)
    with pytest.raises(ValueError, match="retention must be one of"):
        conformance.check_retention("no_such_retention")


def test_check_gate_catches_a_chunked_form_that_disagrees(monkeypatch):
    """The chunked-vs-recurrent comparison is not vacuous: a chunked op that decays 10 % too
    fast (as a gate too steep for the chunked form's precision would) is caught."""
    from memarch.mixers import gla as gla_module

    real = gla_module.GLA.op

    def skewed(q, k, v, g, **kwargs):
        return real(q, k, v, 1.1 * g if kwargs["impl"] == "chunk" else g, **kwargs)

    monkeypatch.setattr(gla_module.GLA, "op", staticmethod(skewed))
    with pytest.raises(
        AssertionError,
        match=r"check_gate\('t_good'\) in gla: chunked vs naive recurrent: outputs: relative",
    ):
        conformance.check_gate("t_good", mixers=["gla"])
