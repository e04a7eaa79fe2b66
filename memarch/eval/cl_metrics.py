"""Continual-learning metrics on an accuracy matrix and on per-task accuracy curves.

Conventions (``docs/continual_forgetting.md`` §Metrics; the definitions match
Avalanche and Mammoth ``utils.metrics``), with 0-based indices in code and ``T`` tasks:

* ``R [T, T]``: ``R[i, j]`` is the accuracy on task (or segment) ``j`` after training task
  ``i`` (or after reading segment ``i``). Entries above the diagonal (tasks not yet seen)
  may be anything, NaN included, for metrics that do not use them.
* ``A [N, T]``: ``A[n, j]`` is the accuracy on task ``j`` at evaluation ``n``, taken at
  training step ``steps[n]`` (strictly increasing); ``task_ends[j]`` is the step ``t_j`` at
  which training on task ``j`` ends (non-decreasing).

In the formulas below indices are 1-based as in the reference (``R_{T,j}`` = the last row):

* ``ACC = (1/T) Σ_j R_{T,j}``
* ``BWT = (1/(T−1)) Σ_{j<T} (R_{T,j} − R_{j,j})`` (negative = forgetting)
* ``FWT = (1/(T−1)) Σ_{j≥2} (R_{j−1,j} − b_j)``, ``b_j`` = accuracy at random init
* ``f_j = max_{l<T} R_{l,j} − R_{T,j}``; ``F = mean_{j<T} f_j`` (relative: ``f_j / max_l R_{l,j}``)
* ``avg incremental ACC = (1/T) Σ_i (1/i) Σ_{j≤i} R_{i,j}``
* ``min-ACC_k = (1/(k−1)) Σ_{j<k} min_{n: steps[n] > t_j} A_j(n)`` (De Lange et al., 2205.13452)
* ``WC-ACC_k(n) = (1/k) A_k(n) + (1 − 1/k) min-ACC_k``
* ``WF^w``: per task, the largest drop ``A_j(n) − A_j(n′)`` over ``n < n′ < n + w`` (inside a
  window of ``w`` evaluations), at least 0; averaged over tasks. ``WP^w``: the same for rises.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _matrix(R) -> np.ndarray:
    r = np.asarray(R, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] < 1:
        raise ValueError(f"R must be a square [T, T] accuracy matrix with T >= 1; got {r.shape}")
    return r


def _lower(r: np.ndarray) -> np.ndarray:
    """Raises unless the diagonal and everything below it is finite (what the metrics read)."""
    rows, cols = np.tril_indices(r.shape[0])
    if not np.all(np.isfinite(r[rows, cols])):
        raise ValueError("R must be finite on and below the diagonal (R[i, j] for j <= i)")
    return r


def _need_two(r: np.ndarray, name: str) -> None:
    if r.shape[0] < 2:
        raise ValueError(f"{name} needs T >= 2 tasks; got R of shape {r.shape}")


def average_accuracy(R) -> float:
    """ACC = (1/T) Σ_j R_{T,j}: mean accuracy over all tasks after the last one."""
    r = _lower(_matrix(R))
    return float(r[-1].mean())


def backward_transfer(R) -> float:
    """BWT = (1/(T−1)) Σ_{j<T} (R_{T,j} − R_{j,j}); negative means forgetting. Needs T ≥ 2."""
    r = _lower(_matrix(R))
    _need_two(r, "BWT")
    t = r.shape[0]
    return float(np.mean(r[-1, : t - 1] - np.diag(r)[: t - 1]))


def forward_transfer(R, baseline: Sequence[float]) -> float:
    """FWT = (1/(T−1)) Σ_{j≥2} (R_{j−1,j} − b_j): accuracy on task j just before training it,
    above its random-init accuracy ``baseline[j]`` (``[T]``). Reads the first superdiagonal."""
    r = _matrix(R)
    _need_two(r, "FWT")
    t = r.shape[0]
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (t,):
        raise ValueError(f"baseline must have shape ({t},) (one per task); got {b.shape}")
    above = np.array([r[j - 1, j] for j in range(1, t)])
    if not np.all(np.isfinite(above)) or not np.all(np.isfinite(b)):
        raise ValueError("FWT needs finite R[j-1, j] (the superdiagonal) and baseline")
    return float(np.mean(above - b[1:]))


def forgetting_per_task(R, *, relative: bool = False) -> np.ndarray:
    """``f_j = max_{l<T} R_{l,j} − R_{T,j}`` for each ``j < T`` (``[T−1]``; empty when T = 1).

    The max runs over every row before the last (as in Chaudhry et al. 2018, rows before task
    ``j`` was trained included; NaN entries above the diagonal are skipped), so ``f_j`` can be
    negative when a task improves at the end.
    ``relative=True`` divides by ``max_{l<T} R_{l,j}``, with 0/0 taken as 0 (never learnt,
    nothing to forget).
    """
    r = _lower(_matrix(R))
    t = r.shape[0]
    if t == 1:
        return np.zeros(0)
    best = np.nanmax(r[: t - 1, : t - 1], axis=0)  # finite: the diagonal is
    f = best - r[-1, : t - 1]
    if relative:
        f = np.divide(f, best, out=np.zeros_like(f), where=best != 0)
    return f


def forgetting(R, *, relative: bool = False) -> float:
    """F = mean_{j<T} f_j (see :func:`forgetting_per_task`). Needs T ≥ 2."""
    r = _matrix(R)
    _need_two(r, "forgetting")
    return float(forgetting_per_task(r, relative=relative).mean())


def average_incremental_accuracy(R) -> float:
    """(1/T) Σ_i (1/i) Σ_{j≤i} R_{i,j}: the mean over rows of the seen-task accuracy."""
    r = _lower(_matrix(R))
    return float(np.mean([r[i, : i + 1].mean() for i in range(r.shape[0])]))


def _curves(A, steps, task_ends) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(A, dtype=np.float64)
    s = np.asarray(steps)
    e = np.asarray(task_ends)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"A must have shape [num_evals, T] with both >= 1; got {a.shape}")
    if s.shape != (a.shape[0],) or np.any(np.diff(s) <= 0):
        raise ValueError(
            f"steps must be strictly increasing with shape ({a.shape[0]},); got {s.tolist()}"
        )
    if e.shape != (a.shape[1],) or np.any(np.diff(e) < 0):
        raise ValueError(
            f"task_ends must be non-decreasing with shape ({a.shape[1]},); got {e.tolist()}"
        )
    return a, s, e


def _check_task(k: int, num_tasks: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_tasks:
        raise ValueError(f"task k must be an int in [1, {num_tasks}] (1-based); got {k!r}")


def min_accuracy(A, steps, task_ends, k: int, *, upto: int | None = None) -> float:
    """min-ACC_k = (1/(k−1)) Σ_{j<k} min_{n: t_j < steps[n] ≤ upto} A_j(n), for 1-based task
    ``k ≥ 2`` (the previous tasks' worst accuracy after they were learnt; ``upto`` = the last
    evaluation step by default). Raises if some earlier task has no evaluation in the range."""
    a, s, e = _curves(A, steps, task_ends)
    _check_task(k, a.shape[1])
    if k < 2:
        raise ValueError("min-ACC needs k >= 2 (there is no earlier task for k = 1)")
    last = s[-1] if upto is None else upto
    mins = []
    for j in range(k - 1):
        sel = (s > e[j]) & (s <= last)
        if not sel.any():
            raise ValueError(
                f"task {j + 1} ends at step {e[j]}: no evaluation in ({e[j]}, {last}] for min-ACC"
            )
        mins.append(a[sel, j].min())
    return float(np.mean(mins))


def worst_case_accuracy(A, steps, task_ends, k: int, n: int) -> float:
    """WC-ACC at evaluation index ``n`` during 1-based task ``k``:
    ``(1/k) A_k(n) + (1 − 1/k) min-ACC_k``, min-ACC taken over evaluations up to ``steps[n]``.
    For k = 1 it is ``A_1(n)``."""
    a, s, e = _curves(A, steps, task_ends)
    _check_task(k, a.shape[1])
    if not -a.shape[0] <= n < a.shape[0]:
        raise ValueError(f"n must index an evaluation in [0, {a.shape[0]}); got {n}")
    current = a[n, k - 1]
    if k == 1:
        return float(current)
    return float(current / k + (1 - 1 / k) * min_accuracy(a, s, e, k, upto=s[n]))


def _windowed(a: np.ndarray, w: int, sign: float) -> np.ndarray:
    if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 2:
        raise ValueError(f"window w must be an int >= 2 (evaluations); got {w!r}")
    a = np.asarray(a, dtype=np.float64)
    best = np.zeros(a.shape[1])
    for lag in range(1, min(w, a.shape[0])):
        change = sign * (a[:-lag] - a[lag:])  # sign=+1: drop from n to n + lag
        best = np.maximum(best, change.max(axis=0))
    return best


def windowed_forgetting_per_task(A, w: int = 10) -> np.ndarray:
    """Per task ``j``: ``max_{n < n′ < n + w} (A_j(n) − A_j(n′))``, at least 0 (``[T]``)."""
    return _windowed(np.asarray(A), w, 1.0)


def windowed_forgetting(A, w: int = 10) -> float:
    """WF^w: :func:`windowed_forgetting_per_task` averaged over tasks (``A [N, T]``)."""
    a = np.asarray(A, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"A must have shape [num_evals, T]; got {a.shape}")
    return float(windowed_forgetting_per_task(a, w).mean())


def windowed_plasticity(A, w: int = 10) -> float:
    """WP^w: the largest rise ``A_j(n′) − A_j(n)`` inside a window of ``w``, averaged."""
    a = np.asarray(A, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"A must have shape [num_evals, T]; got {a.shape}")
    return float(_windowed(a, w, -1.0).mean())


def retention_by_distance(R) -> dict[int, float]:
    """R(d) = mean_i R_{i+d,i} over the finite entries of the d-th subdiagonal, ``d ≥ 0``
    (segmented retention: accuracy on facts read ``d`` segments ago)."""
    r = _matrix(R)
    out = {}
    for d in range(r.shape[0]):
        diag = np.diagonal(r, offset=-d)
        diag = diag[np.isfinite(diag)]
        if diag.size:
            out[d] = float(diag.mean())
    return out


def summary(R) -> dict[str, float]:
    """ACC, BWT, F, relative F and average incremental ACC of ``R`` (BWT/F only when T ≥ 2)."""
    r = _matrix(R)
    out = {"acc": average_accuracy(r), "avg_incremental_acc": average_incremental_accuracy(r)}
    if r.shape[0] >= 2:
        out.update(
            bwt=backward_transfer(r),
            forgetting=forgetting(r),
            relative_forgetting=forgetting(r, relative=True),
        )
    return out
