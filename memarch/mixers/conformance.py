"""Protocol conformance checks every mixer must pass (used by the test suite, and callable
from a notebook on a freshly prototyped mixer).

Each check raises ``AssertionError`` with the measured error when the invariant fails:

- :func:`check_decode_matches_full` — prefill a prefix, decode the rest token by token; the
  outputs equal one full forward pass.
- :func:`check_packed_matches_separate` — sequences packed in one row with ``segment_ids``
  give the same outputs as each sequence run on its own.
- :func:`check_causal` — changing future tokens changes no earlier output.
- :func:`check_gradients_finite` — gradients of every parameter exist and are finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch.testing import assert_close, rel_rms


def compiled(mixer):
    """``mixer`` as a jit-compiled function ``f(x, cache=None, segment_ids=None)`` (same
    parameters; one compilation per input shape, so token-by-token decoding is fast)."""
    graphdef, state = nnx.split(mixer)

    @jax.jit
    def call(state, x, cache, segment_ids):
        return nnx.merge(graphdef, state)(x, cache=cache, segment_ids=segment_ids)

    def f(x, cache=None, segment_ids=None):
        return call(state, x, cache, segment_ids)

    f.init_cache = mixer.init_cache
    return f


def check_decode_matches_full(mixer, x: jax.Array, prefix: int, *, tol: float = 1e-5) -> float:
    """Full forward on ``x [B, T, D]`` vs prefill(x[:, :prefix]) + decode of each later token.

    Returns the relative RMS error (fp32 expected ≤ 1e-5).
    """
    b, t, _ = x.shape
    cache = mixer.init_cache(b, t, x.dtype)
    mixer = compiled(mixer)
    full, _ = mixer(x)
    outs = []
    if prefix:
        y, cache = mixer(x[:, :prefix], cache=cache)
        outs.append(y)
    for i in range(prefix, t):
        y, cache = mixer(x[:, i : i + 1], cache=cache)
        outs.append(y)
    stepped = jnp.concatenate(outs, axis=1)
    assert_close("prefill+decode vs full", stepped, full, tol)
    return rel_rms(stepped, full)


def check_packed_matches_separate(
    mixer, x: jax.Array, lengths: list[int], *, tol: float = 1e-5
) -> float:
    """Packs ``x [1, T, D]`` into segments of ``lengths`` (summing to T) and compares each
    segment's outputs with running that segment alone. Returns the worst relative RMS error."""
    if sum(lengths) != x.shape[1] or x.shape[0] != 1:
        raise ValueError(f"lengths must sum to T={x.shape[1]} and B must be 1; got {lengths}")
    seg = jnp.asarray(np.repeat(np.arange(len(lengths)) * 3 + 1, lengths)[None], jnp.int32)
    mixer = compiled(mixer)
    packed, _ = mixer(x, segment_ids=seg)
    worst, start = 0.0, 0
    for n in lengths:
        alone, _ = mixer(x[:, start : start + n])
        assert_close(
            f"packed segment [{start}, {start + n})", packed[:, start : start + n], alone, tol
        )
        worst = max(worst, rel_rms(packed[:, start : start + n], alone))
        start += n
    return worst


def check_causal(mixer, x: jax.Array, t0: int) -> None:
    """Perturbs ``x[:, t0:]``; outputs before ``t0`` must not change at all (≤ 1e-6 abs)."""
    mixer = compiled(mixer)
    y1, _ = mixer(x)
    x2 = x.at[:, t0:].add(jax.random.normal(jax.random.key(7), x[:, t0:].shape))
    y2, _ = mixer(x2)
    diff = float(jnp.max(jnp.abs(y1[:, :t0] - y2[:, :t0]))) if t0 else 0.0
    if diff > 1e-6:
        raise AssertionError(f"causality: outputs before t={t0} changed by {diff:.2e}")
    if float(jnp.max(jnp.abs(y1[:, t0:] - y2[:, t0:]))) == 0.0:
        raise AssertionError("causality check is vacuous: later outputs did not change either")


def check_gradients_finite(mixer, x: jax.Array) -> None:
    """d(Σ y²)/dθ exists for every parameter, is finite, and is not all zero."""

    graphdef, state = nnx.split(mixer)

    @jax.jit
    def grad_fn(state):
        def loss(state):
            y, _ = nnx.merge(graphdef, state)(x)
            return jnp.sum(y.astype(jnp.float32) ** 2)

        return jax.grad(loss)(state)

    grads = grad_fn(state)
    leaves = jax.tree.leaves(grads)
    if not leaves:
        raise AssertionError("mixer has no parameters to differentiate")
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        if not bool(jnp.all(jnp.isfinite(g))):
            raise AssertionError(f"non-finite gradient at {jax.tree_util.keystr(path)}")
    if all(float(jnp.max(jnp.abs(g))) == 0.0 for g in leaves):
        raise AssertionError("all gradients are exactly zero")
