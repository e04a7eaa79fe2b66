"""Numerical comparison helpers used by the test suite and by correctness checks.

The criterion follows flash-linear-attention's ``assert_close`` without its relaxations:
pass when ``max|actual − ref| ≤ atol``; otherwise require
``RMS(actual − ref) / (RMS(ref) + 1e-8) ≤ tol`` and no NaN/inf.
"""

from __future__ import annotations

import numpy as np


def rel_rms(actual, ref) -> float:
    """Relative RMS error ``‖actual − ref‖ / (‖ref‖ + 1e-8)`` computed in float64."""
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"shape mismatch: actual {a.shape} vs ref {r.shape}")
    return float(np.sqrt(np.mean((a - r) ** 2)) / (np.sqrt(np.mean(r**2)) + 1e-8))


def assert_close(name: str, actual, ref, tol: float, atol: float = 1e-6) -> None:
    """Raises AssertionError naming ``name`` when ``actual`` is not close to ``ref``."""
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if a.shape != r.shape:
        raise AssertionError(f"{name}: shape {a.shape} != reference shape {r.shape}")
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{name}: non-finite values in result")
    if a.size == 0 or np.max(np.abs(a - r)) <= atol:
        return
    err = rel_rms(a, r)
    if not err <= tol:
        raise AssertionError(f"{name}: relative RMS error {err:.3e} > tolerance {tol:.1e}")
