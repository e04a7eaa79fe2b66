"""Known models are corners of the engine (scale and sign conventions documented per test).

- Gated DeltaNet (``memarch.ops.gated_delta_rule``, state S = Wᵀ, o = scale·Sᵀq) decays first
  and takes the delta step at the decayed state: ``W_t = γW(I − βkkᵀ) + βvkᵀ``. The engine
  (Titans order) takes the gradient at the undecayed memory: ``W_t = γW − θ(Wk − v)kᵀ``
  with ℓ = ½‖Wk − v‖². They coincide with **θ = γβ and v' = v/γ** (and scale = 1, read after
  the write in both).
- (Gated) linear attention ``S_t = γS + kvᵀ``: dot-product bias ℓ = −⟨Wk, v⟩ gives
  ``∇_W = −vkᵀ``, so ``W_t = γW + θvkᵀ``: θ = 1, log γ = g, scale = 1.
- Yaad with δ → ∞ is the ℓ2 bias; Moneta with p = q = 2 is ℓ2 GD with decay; Memora's memory
  rows stay on the simplex scaled by c.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from memory_cases import CONFIGS, inputs, memory_forward

from memarch.memory import MemoryConfig, WriteGates, make_spec
from memarch.ops import gated_delta_rule, gla, linear_attention
from memarch.testing import assert_close


@pytest.mark.parametrize("impl", ["chunk", "naive"])
def test_linear_l2_decay_gd_chunk1_equals_gated_delta_rule(impl):
    cfg = MemoryConfig(structure="linear", bias="l2", retention="decay", rule="gd", chunk_size=1)
    spec, init, q, k, v, g = inputs(cfg, t=12, h=2, d=4)
    beta = jax.nn.sigmoid(jax.random.normal(jax.random.key(5), g.lr.shape))
    gamma = jnp.exp(g.log_keep)
    mapped = WriteGates(lr=gamma * beta, log_keep=g.log_keep)
    y, st = memory_forward(spec, init, q, k, v / gamma[..., None], mapped, impl=impl)
    s0 = jnp.broadcast_to(jnp.swapaxes(init["W"], -1, -2), (q.shape[0], *init["W"].shape))
    o, s_final = gated_delta_rule(
        q,
        k,
        v,
        g.log_keep,
        beta,
        scale=1.0,
        initial_state=s0,
        output_final_state=True,
        impl="naive",
    )
    assert_close("outputs vs gated_delta_rule", y, o, 1e-5)
    assert_close("memory vs state", st.memory["W"], jnp.swapaxes(s_final, -1, -2), 1e-5)


@pytest.mark.parametrize("chunk", [1, 5])
def test_linear_dot_decay_equals_gated_linear_attention(chunk):
    """Hebbian writes do not read the memory, so every chunk size gives the same function."""
    cfg = MemoryConfig(bias="dot", retention="decay", rule="gd", chunk_size=chunk)
    spec, init, q, k, v, g = inputs(cfg, t=11)
    ones = jnp.ones_like(g.lr)
    y, _ = memory_forward(spec, init, q, k, v, WriteGates(lr=ones, log_keep=g.log_keep))
    s0 = jnp.broadcast_to(jnp.swapaxes(init["W"], -1, -2), (q.shape[0], *init["W"].shape))
    o, _ = gla(q, k, v, g.log_keep, scale=1.0, initial_state=s0, impl="naive")
    assert_close("outputs vs gla", y, o, 1e-5)


def test_linear_dot_no_retention_equals_linear_attention():
    cfg = MemoryConfig(bias="dot", retention="none", rule="gd", chunk_size=4)
    spec, init, q, k, v, g = inputs(cfg, t=10)
    init = jax.tree.map(jnp.zeros_like, init)
    y, _ = memory_forward(spec, init, q, k, v, WriteGates(lr=jnp.ones_like(g.lr)))
    o, _ = linear_attention(q, k, v, scale=1.0, impl="naive")
    assert_close("outputs vs linear_attention", y, o, 1e-5)


def test_yaad_with_huge_delta_is_l2():
    spec, init, q, k, v, g = inputs(CONFIGS["yaad"], t=9)
    y_yaad, _ = memory_forward(spec, init, q, k, v, g.replace(delta=jnp.full_like(g.lr, 1e6)))
    l2 = dataclasses.replace(CONFIGS["yaad"], bias="l2")
    spec2, *_ = inputs(l2, t=9)
    y_l2, _ = memory_forward(spec2, init, q, k, v, g)
    assert_close("yaad(δ=∞) vs l2", y_yaad, y_l2, 1e-6)
    y_small, _ = memory_forward(spec, init, q, k, v, g.replace(delta=jnp.full_like(g.lr, 1e-2)))
    assert not np.allclose(np.asarray(y_small), np.asarray(y_l2), atol=1e-4)


def test_moneta_with_p2_q2_is_l2_gd_with_decay():
    moneta = dataclasses.replace(CONFIGS["moneta"], p=2.0, q=2.0)
    spec, init, q, k, v, g = inputs(moneta, t=9)
    spec_l2, *_ = inputs(dataclasses.replace(moneta, bias="l2", retention="decay"), t=9)
    y_m, _ = memory_forward(spec, init, q, k, v, g)
    y_l2, _ = memory_forward(spec_l2, init, q, k, v, g)
    assert_close("moneta(p=q=2) vs l2 + decay", y_m, y_l2, 1e-4)  # lp smoothing ε = 1e-6


def test_memora_memory_stays_on_the_scaled_simplex():
    cfg = dataclasses.replace(CONFIGS["memora"], simplex_scale=2.0)
    spec, init, q, k, v, g = inputs(cfg, t=9, theta=1.5)
    _, st = memory_forward(spec, init, q, k, v, g)
    for w in jax.tree.leaves(spec.retention.project(st.memory)):
        assert float(jnp.min(w)) > 0
        np.testing.assert_allclose(np.asarray(jnp.sum(w, -1)), 2.0, rtol=1e-5)


def _memora_default(d=32):
    """The default Memora memory (rows sum to their length) at initialisation, key width d."""
    spec = make_spec(
        MemoryConfig(structure="mlp", expansion=2.0, retention="kl_softmax", rule="gd")
    )
    logits = spec.structure.init(jax.random.key(3), d, d)
    return spec, logits


def test_memora_default_rows_sum_to_their_length():
    spec, logits = _memora_default()
    for w in jax.tree.leaves(spec.retention.project(logits)):
        np.testing.assert_allclose(np.asarray(jnp.sum(w, -1)), w.shape[-1], rtol=1e-5)


def test_memora_default_memory_is_alive_at_initialisation():
    """Regression: with rows summing to 1 the MLP memory's pre-LayerNorm output was nearly
    constant (std ~5e-5), so the LayerNorm read M(x) − x = LN(m) had norm ~0.09 instead of √d
    (ε-dominated) and Memora trained at chance on MQAR."""
    d = 32
    spec, logits = _memora_default(d)
    w = spec.retention.project(logits)
    x = jax.random.normal(jax.random.key(4), (8, d))
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    read = jax.vmap(lambda xi: spec.structure.apply(w, xi) - xi)(x)  # LN(m) per key
    assert float(jnp.min(jnp.linalg.norm(read, axis=-1))) > 0.5 * d**0.5
    # different keys read different values (not one constant vector)
    assert float(jnp.mean(jnp.std(read, axis=0))) > 0.3


def test_memora_mirror_step_has_the_scale_of_a_gradient_step():
    """At initialisation a KL mirror step on the logits, A − θu with u = ∇_W ℓ, moves W by
    about θ‖ū‖ (plain gradient descent's step restricted to the simplex's tangent space:
    ū = u minus its row means, since the rows' sums are fixed), not θ‖ū‖/n."""
    d = 32
    spec, logits = _memora_default(d)
    w = spec.retention.project(logits)
    k = jax.random.normal(jax.random.key(5), (d,))
    k, v = k / jnp.linalg.norm(k), jax.random.normal(jax.random.key(6), (d,))
    u = jax.grad(lambda w_: spec.loss(spec.structure.apply(w_, k), v, 1.0))(w)
    theta = 1e-3
    stepped = spec.retention.project(jax.tree.map(lambda a, g: a - theta * g, logits, u))
    for name in w:
        moved = float(jnp.linalg.norm(stepped[name] - w[name]))
        tangent = u[name] - jnp.mean(u[name], axis=-1, keepdims=True)
        ratio = moved / (theta * float(jnp.linalg.norm(tangent)))
        assert 0.3 < ratio < 3.0, (name, ratio)
