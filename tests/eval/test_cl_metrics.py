import math

import numpy as np
import pytest

from memarch.eval import cl_metrics as cl

# R[i, j]: accuracy on task j after training task i (T = 3)
R3 = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.6, 0.8, 0.3],
        [0.5, 0.7, 0.95],
    ]
)


def test_matrix_metrics_match_hand_computed_values():
    assert cl.average_accuracy(R3) == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert cl.backward_transfer(R3) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)  # −0.25
    np.testing.assert_allclose(cl.forgetting_per_task(R3), [0.9 - 0.5, 0.8 - 0.7])
    assert cl.forgetting(R3) == pytest.approx(0.25)
    assert cl.forgetting(R3, relative=True) == pytest.approx((0.4 / 0.9 + 0.1 / 0.8) / 2)
    # FWT reads the superdiagonal R[j-1, j] against the random-init baseline b_j
    assert cl.forward_transfer(R3, [0.1, 0.05, 0.1]) == pytest.approx(
        ((0.1 - 0.05) + (0.3 - 0.1)) / 2
    )
    expected = (0.9 + (0.6 + 0.8) / 2 + (0.5 + 0.7 + 0.95) / 3) / 3
    assert cl.average_incremental_accuracy(R3) == pytest.approx(expected)
    s = cl.summary(R3)
    assert s["bwt"] == pytest.approx(-0.25) and s["forgetting"] == pytest.approx(0.25)


def test_edge_cases_perfect_retention_improvement_and_nan_above_diagonal():
    perfect = np.tril(np.ones((4, 4)))
    assert cl.average_accuracy(perfect) == 1.0
    assert cl.backward_transfer(perfect) == 0.0 and cl.forgetting(perfect) == 0.0
    # a task that gets better at the end has negative forgetting and positive BWT
    better = np.array([[0.5, np.nan], [0.8, 0.9]])
    assert cl.forgetting(better) == pytest.approx(-0.3)
    assert cl.backward_transfer(better) == pytest.approx(0.3)
    # never learnt: relative forgetting 0/0 counts as 0
    never = np.array([[0.0, np.nan], [0.0, 1.0]])
    assert cl.forgetting(never, relative=True) == 0.0
    # NaN above the diagonal is skipped by the max (rows before task j was trained)
    r = R3.copy()
    r[0, 1] = np.nan
    assert cl.forgetting(r) == pytest.approx(0.25)
    # one task: ACC is defined, BWT/F need two
    one = np.array([[0.7]])
    assert cl.average_accuracy(one) == pytest.approx(0.7)
    assert cl.forgetting_per_task(one).shape == (0,)
    assert set(cl.summary(one)) == {"acc", "avg_incremental_acc"}
    with pytest.raises(ValueError, match="T >= 2"):
        cl.backward_transfer(one)
    with pytest.raises(ValueError, match="T >= 2"):
        cl.forgetting(one)


def test_bad_matrices_are_rejected():
    with pytest.raises(ValueError, match="square"):
        cl.average_accuracy(np.ones((2, 3)))
    bad = R3.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="below the diagonal"):
        cl.average_accuracy(bad)
    with pytest.raises(ValueError, match="baseline"):
        cl.forward_transfer(R3, [0.1, 0.2])


# A[n, j]: accuracy on task j at evaluation n (steps), tasks ending at steps 20 and 50
STEPS = np.array([0, 10, 20, 30, 40, 50])
ENDS = np.array([20, 50])
A = np.array(
    [
        [0.0, 0.0],
        [0.5, 0.0],
        [0.9, 0.1],
        [0.4, 0.5],  # stability gap right after the switch
        [0.6, 0.8],
        [0.7, 0.9],
    ]
)


def test_min_acc_and_wc_acc_match_hand_computed_values():
    assert cl.min_accuracy(A, STEPS, ENDS, 2) == pytest.approx(0.4)  # min of 0.4, 0.6, 0.7
    assert cl.worst_case_accuracy(A, STEPS, ENDS, 2, 5) == pytest.approx(0.5 * 0.9 + 0.5 * 0.4)
    assert cl.worst_case_accuracy(A, STEPS, ENDS, 2, 3) == pytest.approx(0.5 * 0.5 + 0.5 * 0.4)
    assert cl.worst_case_accuracy(A, STEPS, ENDS, 1, 1) == pytest.approx(0.5)
    # min-ACC only looks at evaluations strictly after the task ended (and up to `upto`)
    assert cl.min_accuracy(A, STEPS, ENDS, 2, upto=40) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no evaluation"):
        cl.min_accuracy(A, STEPS, ENDS, 2, upto=20)
    with pytest.raises(ValueError, match="k >= 2"):
        cl.min_accuracy(A, STEPS, ENDS, 1)
    with pytest.raises(ValueError, match=r"task k must be an int in \[1, 2\]"):
        cl.worst_case_accuracy(A, STEPS, ENDS, 3, 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        cl.min_accuracy(A, STEPS[::-1], ENDS, 2)


def test_windowed_forgetting_and_plasticity():
    # task 0 drops 0.5 (0.9 → 0.4) between neighbours; task 1 never drops
    np.testing.assert_allclose(cl.windowed_forgetting_per_task(A, 2), [0.5, 0.0])
    assert cl.windowed_forgetting(A, 2) == pytest.approx(0.25)
    assert cl.windowed_forgetting(A) == pytest.approx(0.25)
    # rises: task 0 0.0 → 0.5 (w=2) or 0.0 → 0.9 (w=3); task 1 0.1 → 0.5 (w=2), 0.1 → 0.8 (w=3)
    assert cl.windowed_plasticity(A, 2) == pytest.approx((0.5 + 0.4) / 2)
    assert cl.windowed_plasticity(A, 3) == pytest.approx((0.9 + 0.7) / 2)
    # a steady decline of 0.1 per evaluation: the window bounds the drop
    decline = np.array([[1.0], [0.9], [0.8], [0.7], [0.6]])
    for w, drop in ((2, 0.1), (3, 0.2), (5, 0.4), (10, 0.4)):
        assert cl.windowed_forgetting(decline, w) == pytest.approx(drop)
    with pytest.raises(ValueError, match="window w"):
        cl.windowed_forgetting(A, 1)


def test_retention_by_distance_averages_subdiagonals():
    r = np.array([[0.9, np.nan, np.nan], [0.5, 0.8, np.nan], [0.1, 0.3, 0.7]])
    got = cl.retention_by_distance(r)
    assert got == pytest.approx({0: (0.9 + 0.8 + 0.7) / 3, 1: (0.5 + 0.3) / 2, 2: 0.1})
    assert all(math.isfinite(v) for v in got.values())
