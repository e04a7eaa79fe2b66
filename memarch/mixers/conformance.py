"""Protocol conformance checks every mixer must pass (used by the test suite, and callable
from a notebook on a freshly prototyped mixer).

Each check raises ``AssertionError`` with the measured error when the invariant fails:

- :func:`check_decode_matches_full` — prefill a prefix, decode the rest token by token; the
  outputs equal one full forward pass.
- :func:`check_packed_matches_separate` — sequences packed in one row with ``segment_ids``
  give the same outputs as each sequence run on its own.
- :func:`check_causal` — changing future tokens changes no earlier output (and a call
  without a cache returns none).
- :func:`check_gradients_finite` — gradients of every parameter exist and are finite.

Gate checks (a new gate is registered by name, then checked end to end in tiny mixers):

- :func:`check_gate` — a linear-family decay gate (:mod:`memarch.layers.decay_gates`) in ``gla`` and
  ``gated_deltanet``: its output is finite, ≤ 0 and token-local, its parameters get gradients;
  the chunked op equals the naive recurrence (outputs, final state from a non-zero initial
  state, finite gradients w.r.t. parameters and input); prefill + decode equals the full
  forward; packed equals separate; causality.
- :func:`check_retention` — a memory-engine retention
  (:func:`memarch.memory.retention.register_retention`) in ``neural_memory`` (linear and MLP
  memories): the projection is finite with finite derivatives (also at A = 0); the chunk form
  equals the token-by-token scan (outputs, final memory, gradients); then the protocol checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch.layers import decay_gates
from memarch.memory import make_retention
from memarch.mixers._registry import build
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


def check_decode_matches_full(
    mixer, x: jax.Array, prefix: int | Sequence[int], *, tol: float = 1e-5
) -> float:
    """Full forward on ``x [B, T, D]`` vs prefill(x[:, :p]) + decode of each later token, for
    each prefix length ``p`` in ``prefix`` (an int or several: one compilation of the full
    pass and of the decode step serves them all).

    Returns the worst relative RMS error (fp32 expected ≤ 1e-5).
    """
    b, t, _ = x.shape
    step = compiled(mixer)
    full, _ = step(x)
    worst = 0.0
    for p in [prefix] if isinstance(prefix, int) else prefix:
        cache = mixer.init_cache(b, t, x.dtype)
        outs = []
        if p:
            y, cache = step(x[:, :p], cache=cache)
            outs.append(y)
        for i in range(p, t):
            y, cache = step(x[:, i : i + 1], cache=cache)
            outs.append(y)
        stepped = jnp.concatenate(outs, axis=1)
        assert_close(f"prefill {p} + decode vs full", stepped, full, tol)
        worst = max(worst, rel_rms(stepped, full))
    return worst


def check_packed_matches_separate(
    mixer, x: jax.Array, lengths: list[int], *, tol: float = 1e-5
) -> float:
    """Packs ``x [1, T, D]`` into segments of ``lengths`` (summing to T) and compares each
    segment's outputs with running that segment alone. The lone segments run as one batch,
    each right-padded to the longest (a causal mixer's outputs do not see the padding; the
    mixers' causality is :func:`check_causal`'s). Returns the worst relative RMS error."""
    if sum(lengths) != x.shape[1] or x.shape[0] != 1:
        raise ValueError(f"lengths must sum to T={x.shape[1]} and B must be 1; got {lengths}")
    seg = jnp.asarray(np.repeat(np.arange(len(lengths)) * 3 + 1, lengths)[None], jnp.int32)
    mixer = compiled(mixer)
    packed, _ = mixer(x, segment_ids=seg)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    longest = max(lengths)
    alone = jnp.concatenate(
        [
            jnp.pad(x[:, a : a + n], ((0, 0), (0, longest - n), (0, 0)))
            for a, n in zip(starts, lengths, strict=True)
        ]
    )
    alone, _ = mixer(alone)  # [len(lengths), longest, D]
    worst = 0.0
    for row, (a, n) in enumerate(zip(starts, lengths, strict=True)):
        got, want = packed[:, a : a + n], alone[row : row + 1, :n]
        assert_close(f"packed segment [{a}, {a + n})", got, want, tol)
        worst = max(worst, rel_rms(got, want))
    return worst


def check_causal(mixer, x: jax.Array, t0: int) -> jax.Array:
    """Perturbs ``x[:, t0:]``; outputs before ``t0`` must not change at all (≤ 1e-6 abs).
    A call without a cache returns ``None`` as its cache. Returns the outputs on ``x``."""
    mixer = compiled(mixer)
    y1, cache = mixer(x)
    if cache is not None:
        raise AssertionError("a call without a cache must return None as its cache")
    x2 = x.at[:, t0:].add(jax.random.normal(jax.random.key(7), x[:, t0:].shape))
    y2, _ = mixer(x2)
    diff = float(jnp.max(jnp.abs(y1[:, :t0] - y2[:, :t0]))) if t0 else 0.0
    if diff > 1e-6:
        raise AssertionError(f"causality: outputs before t={t0} changed by {diff:.2e}")
    if float(jnp.max(jnp.abs(y1[:, t0:] - y2[:, t0:]))) == 0.0:
        raise AssertionError("causality check is vacuous: later outputs did not change either")
    return y1


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


# --- gate checks ----------------------------------------------------------------------------

GATE_MIXERS = ("gla", "gated_deltanet")  # the mixers that take ``gate=<registered name>``
# built-in gate -> (mixer, the mixer's attributes that hold its parameters)
_BUILTIN_GATE_PARAMS = {
    "channel": ("gla", ("gate_down", "gate_up")),
    "head": ("gla", ("gate_down", "gate_up")),
    "mamba2": ("gated_deltanet", ("a_proj", "A_log", "dt_bias")),
}


class _Stage:
    """Context that prefixes an ``AssertionError`` with what was being checked."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is not None and issubclass(kind, AssertionError):
            raise AssertionError(f"{self.what}: {err}") from None
        return False


def _run_with_grads(mixer, x, cache):
    """``(y, new cache, gradients)`` of one jit-compiled call; the gradients are those of a
    fixed random projection of the outputs plus ``Σ sin(final state)`` (when ``cache``) with
    respect to the parameters and ``x``."""
    graphdef, params, rest = nnx.split(mixer, nnx.Param, ...)

    def loss(params, x):
        y, new = nnx.merge(graphdef, params, rest)(x, cache=cache)
        w = jax.random.normal(jax.random.key(11), y.shape, jnp.float32)
        total = jnp.sum(y.astype(jnp.float32) * w)
        if new is not None:
            leaves = jax.tree.leaves(new.state)
            total = total + sum(jnp.sum(jnp.sin(leaf.astype(jnp.float32))) for leaf in leaves)
        return total, (y, new)

    grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))
    grads, (y, new) = grad_fn(params, x)
    return y, new, grads


def _compare_trees(what: str, actual, ref, tol: float) -> float:
    """assert_close on every leaf of two pytrees with the same structure; the worst error."""
    worst = 0.0
    flat_ref = dict(jax.tree_util.tree_leaves_with_path(ref))
    for path, a in jax.tree_util.tree_leaves_with_path(actual):
        r = flat_ref[path]
        assert_close(f"{what} {jax.tree_util.keystr(path)}", a, r, tol)
        worst = max(worst, rel_rms(a, r))
    return worst


def _twin(make, impl_a: str, impl_b: str):
    """Two mixers with identical parameters: ``make(impl_a)`` and ``make(impl_b)``."""
    first, second = make(impl_a), make(impl_b)
    nnx.update(second, nnx.state(first))
    return first, second


def _forms_agree(first, second, x, cache, tol: float, names: tuple[str, str]) -> dict[str, float]:
    """``first`` and ``second`` (same parameters, different forms) agree on outputs, final
    state and gradients (w.r.t. parameters and input), starting from ``cache``."""
    a, b = names
    ya, ca, ga = _run_with_grads(first, x, cache)
    yb, cb, gb = _run_with_grads(second, x, cache)
    errs = {}
    assert_close(f"{a} vs {b}: outputs", ya, yb, tol)
    errs[f"{a} vs {b}: outputs"] = rel_rms(ya, yb)
    errs[f"{a} vs {b}: final state"] = _compare_trees(
        f"{a} vs {b}: final state", ca.state, cb.state, tol
    )
    errs[f"{a} vs {b}: gradients"] = _compare_trees(f"{a} vs {b}: gradient of", ga, gb, tol)
    return errs


def _protocol_checks(mixer, x, tol: float) -> dict[str, float]:
    t = x.shape[1]
    errs = {"prefill+decode vs full": check_decode_matches_full(mixer, x, prefix=5, tol=tol)}
    cut = t // 2 - 2
    errs["packed vs separate"] = check_packed_matches_separate(
        mixer, x[:1], [cut, t - cut], tol=tol
    )
    check_causal(mixer, x, t // 2)  # (finite gradients: checked by _forms_agree)
    return errs


def _gate_mixers(name: str) -> list[str]:
    if name in _BUILTIN_GATE_PARAMS:
        return [_BUILTIN_GATE_PARAMS[name][0]]
    entry = decay_gates.decay_gate_entry(name, mixer="gla")  # ValueError if unknown
    return ["gla"] if entry.metadata["per_channel"] else list(GATE_MIXERS)


def _check_gate_output(mixer, x: jax.Array) -> dict[str, float]:
    """The gate alone: finite, ≤ 0, token-local, and its parameters receive gradients."""
    b, t, d = x.shape
    g = np.asarray(mixer.gates(x)[0])
    if not np.all(np.isfinite(g)):
        raise AssertionError(f"log decay g has non-finite values ({np.sum(~np.isfinite(g))})")
    if np.max(g) > 0:
        raise AssertionError(
            f"log decay g must be <= 0 (decay exp(g) <= 1), but max g = {np.max(g):.3g}: "
            "the state would grow without bound"
        )
    one_by_one = np.asarray(mixer.gates(x.reshape(b * t, 1, d))[0]).reshape(g.shape)
    err = rel_rms(one_by_one, g)
    if np.max(np.abs(one_by_one - g)) > 1e-6:
        raise AssertionError(
            "gate is not token-local: g computed one token at a time (as in decode) differs "
            f"from g computed on the whole sequence (max abs {np.max(np.abs(one_by_one - g)):.2e},"
            f" relative RMS {err:.2e}); g_t may depend on x_t only"
        )
    return {"token-local gate (relative RMS)": err}


def _check_gate_trains(mixer, name: str, x: jax.Array) -> None:
    attrs = _BUILTIN_GATE_PARAMS[name][1] if name in _BUILTIN_GATE_PARAMS else ("decay_gate",)
    gate_params = nnx.All(nnx.Param, nnx.Any(*(nnx.PathContains(a) for a in attrs)))
    graphdef, params, rest = nnx.split(mixer, gate_params, ...)
    if not jax.tree.leaves(params):
        return  # a fixed (parameter-free) gate
    w = jax.random.normal(jax.random.key(5), mixer.gates(x)[0].shape, jnp.float32)

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p, rest).gates(x)[0] * w)

    grads = jax.grad(loss)(params)
    if all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads)):
        raise AssertionError(
            "no gate parameter receives a gradient through g (a stop_gradient, or a piecewise "
            "constant gate?): the gate would never train"
        )


def check_gate(
    name: str,
    *,
    mixers: list[str] | None = None,
    seed: int = 0,
    length: int = 22,
    tol: float = 1e-4,
) -> dict[str, dict[str, float]]:
    """Checks linear-family decay gate ``name`` (registered, or a built-in: ``channel``,
    ``head``, ``mamba2``) in tiny fp32 mixers (``d_model`` 32, 2 heads of width 8, chunk 8,
    ``x [2, length, 32]``): in each of ``mixers`` (default: every mixer that accepts it).

    Raises ``AssertionError`` naming the mixer, the check and the measured error; returns
    ``{mixer: {check: relative RMS error}}`` when everything passes.
    """
    names = _gate_mixers(name) if mixers is None else list(mixers)
    for m in names:
        if m not in GATE_MIXERS:
            raise ValueError(f"mixers must be among {list(GATE_MIXERS)}; got {m!r}")
    x = jax.random.normal(jax.random.key(seed), (2, length, 32), jnp.float32)
    report = {}
    for mixer_name in names:

        def make(impl, mixer_name=mixer_name):
            return build(
                mixer_name,
                d_model=32,
                num_heads=2,
                rngs=nnx.Rngs(seed),
                gate=name,
                head_dim=8,
                chunk_size=8,
                impl=impl,
            )

        where = f"check_gate({name!r}) in {mixer_name}"
        chunked, naive = _twin(make, "chunk", "naive")
        with _Stage(where):
            errs = _check_gate_output(chunked, x)
            _check_gate_trains(chunked, name, x)
        cache = chunked.init_cache(x.shape[0], length)
        s0 = 0.3 * jax.random.normal(jax.random.key(seed + 1), cache.state.shape, jnp.float32)
        cache = cache.replace(state=s0)
        with _Stage(where):
            errs |= _forms_agree(chunked, naive, x, cache, tol, ("chunked", "naive recurrent"))
            errs |= _protocol_checks(chunked, x, tol)
        report[mixer_name] = errs
    return report


def _check_projection(name: str, project) -> None:
    """``P`` on one weight matrix: same shape, finite value and derivative, at 0 and random."""
    for label, a in (
        ("A = 0", jnp.zeros((8, 8), jnp.float32)),
        ("random A", jax.random.normal(jax.random.key(3), (8, 8), jnp.float32)),
    ):
        w = project({"W": a})["W"]
        if w.shape != a.shape:
            raise AssertionError(f"P(A) must keep A's shape {a.shape}; got {w.shape}")
        if not bool(jnp.all(jnp.isfinite(w))):
            raise AssertionError(f"P(A) is not finite at {label} (a linear memory starts at 0)")
        d = jax.grad(lambda a: jnp.sum(jnp.sin(project({"W": a})["W"])))(a)
        if not bool(jnp.all(jnp.isfinite(d))):
            raise AssertionError(f"the derivative of P is not finite at {label}")


def check_retention(
    name: str,
    *,
    structures: tuple[str, ...] = ("linear", "mlp"),
    seed: int = 0,
    length: int = 14,
    tol: float = 1e-4,
) -> dict[str, dict[str, float]]:
    """Checks memory-engine retention ``name`` in tiny fp32 ``neural_memory`` layers (one per
    memory ``structure``; ``d_model`` 16, 2 heads of width 8, chunk 4, ``x [2, length, 16]``).

    Raises ``AssertionError`` naming the structure, the check and the measured error; returns
    ``{structure: {check: relative RMS error}}`` when everything passes.
    """
    retention = make_retention(name)  # ValueError naming the registered retentions
    with _Stage(f"check_retention({name!r})"):
        _check_projection(name, retention.project)
    x = jax.random.normal(jax.random.key(seed), (2, length, 16), jnp.float32)
    report = {}
    for structure in structures:

        def make(impl, structure=structure):
            return build(
                "neural_memory",
                d_model=16,
                num_heads=2,
                rngs=nnx.Rngs(seed),
                retention=name,
                structure=structure,
                expansion=2.0,
                chunk_size=4,
                forget_init=0.1,
                impl=impl,
            )

        chunked, scan = _twin(make, "chunk", "naive")
        cache = chunked.init_cache(x.shape[0], length)
        with _Stage(f"check_retention({name!r}) with a {structure} memory"):
            errs = _forms_agree(chunked, scan, x, cache, tol, ("chunk form", "token scan"))
            auto = make("auto")
            nnx.update(auto, nnx.state(chunked))
            errs |= _protocol_checks(auto, x, tol)
        report[structure] = errs
    return report
