"""Top-k routing functions (memarch.mixers.routing) on small hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memarch.mixers import routing


def test_router_probs_is_the_softmax_of_x_w():
    x = jnp.array([[[1.0, 0.0], [0.0, 2.0]]])  # [B=1, T=2, D=2]
    w = jnp.array([[math.log(3.0), 0.0], [0.0, math.log(2.0)]])  # [D, M=2]
    probs = routing.router_probs(x, w)
    # token 0: logits (log 3, 0) -> (3/4, 1/4); token 1: (0, 2 log 2) -> (1/5, 4/5)
    np.testing.assert_allclose(probs, [[[0.75, 0.25], [0.2, 0.8]]], rtol=1e-6)
    assert probs.dtype == jnp.float32


def test_top_k_picks_the_largest_and_renormalises():
    probs = jnp.array([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]])
    w, idx = routing.top_k(probs, 2)
    np.testing.assert_array_equal(idx, [[0, 2], [1, 2]])
    np.testing.assert_allclose(w, [[0.625, 0.375], [2 / 3, 1 / 3]], rtol=1e-6)
    assert idx.dtype == jnp.int32
    w1, idx1 = routing.top_k(probs, 1)
    np.testing.assert_array_equal(idx1, [[0], [1]])
    np.testing.assert_array_equal(w1, 1.0)  # top-1: the renormalised weight is 1


def test_top_k_ties_go_to_the_lower_memory_id():
    w, idx = routing.top_k(jnp.full((4,), 0.25), 2)
    np.testing.assert_array_equal(idx, [0, 1])
    np.testing.assert_allclose(w, [0.5, 0.5])
    _, idx = routing.top_k(jnp.array([0.1, 0.3, 0.3, 0.3]), 2)
    np.testing.assert_array_equal(idx, [1, 2])


def test_top_k_rejects_k_outside_one_to_m():
    with pytest.raises(ValueError, match="k must be in"):
        routing.top_k(jnp.ones((2, 3)) / 3, 4)
    with pytest.raises(ValueError, match="k must be in"):
        routing.top_k(jnp.ones((2, 3)) / 3, 0)


def test_append_always_on_adds_one_pair_of_weight_one():
    w, idx = routing.append_always_on(jnp.array([[0.6, 0.4]]), jnp.array([[2, 0]]), 3)
    np.testing.assert_array_equal(idx, [[2, 0, 3]])
    np.testing.assert_allclose(w, [[0.6, 0.4, 1.0]])


def test_capacity_is_the_ceiling_of_the_factor_times_t():
    assert routing.capacity(0.5, 24) == 12
    assert routing.capacity(1.0, 7) == 7
    assert routing.capacity(0.3, 10) == 3  # 0.3 · 10 = 3.0000000000000004 in floats
    assert routing.capacity(0.34, 10) == 4
    assert routing.capacity(0.01, 10) == 1  # at least one
    with pytest.raises(ValueError, match="capacity_factor"):
        routing.capacity(0.0, 10)


def test_rank_counts_and_drops():
    mem = jnp.array([[0, 1, 0, 0, 1, 0]])  # memory of each pair, in time order
    rank, count, drop = routing.rank_in_memory(mem, jnp.array([2, 5]))
    np.testing.assert_array_equal(rank, [[0, 0, 1, 2, 1, 3]])
    np.testing.assert_array_equal(count, [[4, 2]])
    np.testing.assert_array_equal(drop, [[2, 0]])  # memory 0: 4 pairs, capacity 2


def test_capacity_drops_keep_the_newest_tokens():
    mem = jnp.array([[0, 1, 0, 0, 1, 0], [1, 1, 1, 0, 1, 1]])
    rank, _, drop = routing.rank_in_memory(mem, jnp.array([2, 2]))
    slot = routing.kept_slot(mem, rank, drop)
    # row 0: memory 0 keeps pairs 3 and 5 (its newest two), memory 1 keeps both of its pairs
    np.testing.assert_array_equal(slot[0], [-2, 0, -1, 0, 1, 1])
    # row 1: memory 1 has pairs 0, 1, 2, 4, 5 and keeps 4, 5; memory 0 keeps its only pair
    np.testing.assert_array_equal(slot[1], [-3, -2, -1, 0, 0, 1])
    np.testing.assert_array_equal(slot >= 0, [[0, 1, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]])


def test_aux_loss_on_a_hand_made_case():
    # M = 3, k = 2, two tokens: (0: 0.75, 1: 0.25) and (0: 0.6, 2: 0.4)
    w = jnp.array([[[0.75, 0.25], [0.6, 0.4]]])
    idx = jnp.array([[[0, 1], [0, 2]]])
    np.testing.assert_allclose(routing.load_fractions(idx, 3), [1.0, 0.5, 0.5])
    # f = (1, 1/2, 1/2), P = (0.675, 0.125, 0.2): L = 3 · (0.675 + 0.0625 + 0.1) = 2.5125
    assert float(routing.aux_loss(w, idx, 3)) == pytest.approx(2.5125, rel=1e-6)
    # dL/dw_tj = M · f_{idx_tj} / (B·T): gradients through the weights only
    grad = jax.grad(lambda w: routing.aux_loss(w, idx, 3))(w)
    np.testing.assert_allclose(grad, [[[1.5, 0.75], [1.5, 0.75]]], rtol=1e-6)


def test_aux_loss_is_k_when_balanced_and_m_when_collapsed():
    half = jnp.full((1, 4, 2), 0.5)
    balanced = jnp.array([[[0, 1], [2, 3], [1, 0], [3, 2]]])
    collapsed = jnp.array([[[0, 1]] * 4])
    assert float(routing.aux_loss(half, balanced, 4)) == pytest.approx(2.0)
    assert float(routing.aux_loss(half, collapsed, 4)) == pytest.approx(4.0)
    assert float(routing.load_max(balanced, 4)) == pytest.approx(1.0)
    assert float(routing.load_max(collapsed, 4)) == pytest.approx(2.0)  # M / k


def test_router_entropy():
    uniform = jnp.full((2, 3, 4), 0.25)
    assert float(routing.router_entropy(uniform)) == pytest.approx(math.log(4), rel=1e-6)
    one_hot = jnp.zeros((2, 3, 4)).at[..., 1].set(1.0)
    assert float(routing.router_entropy(one_hot)) == 0.0
