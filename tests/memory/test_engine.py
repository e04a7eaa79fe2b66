"""The forms of the memory engine agree: chunked == token scan == an explicit per-token loop;
split + carried state == one pass; causality; packed segments and padding."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from memory_cases import CONFIGS, inputs, memory_forward

from memarch.memory import WriteGates
from memarch.memory.engine import initial_state
from memarch.memory.structures import Structure
from memarch.testing import assert_close, rel_rms

TOL = 2e-5  # float32, chunk (associative scans / dual form) vs token order
# Memora's memory (mean entry 1 per softmax row) runs through a LayerNorm whose Jacobian amplifies
# float32 rounding of the logits along the sequence (1.2e-4 after 9 tokens); in float64 the two
# orders agree to 7e-14, which test_chunked_equals_per_token_loop_... pins at chunk 16.
TOL_BY_NAME = {"memora": 5e-4}


def with_chunk(cfg, c):
    return dataclasses.replace(cfg, chunk_size=c)


def _loop_stream(spec, a, q, k, v, lr, eta, keep, delta):
    """One stream token by token: q, k [T, K]; v [T, V]; lr, eta, delta [T]; keep [T, C]."""
    s = jax.tree.map(jnp.zeros_like, a)
    anchor = a
    ys = []
    grad = jax.grad(lambda w, k_t, v_t, d_t: spec.loss(spec.structure.apply(w, k_t), v_t, d_t))
    for i in range(q.shape[0]):
        if i % spec.chunk_size == 0:
            anchor = a
        u = grad(spec.retention.project(anchor), k[i], v[i], delta[i])
        if spec.max_grad_norm is not None:  # soft clamp: c·tanh(‖u‖/c)·u/‖u‖
            norm = np.sqrt(sum(float(jnp.sum(x * x)) for x in jax.tree.leaves(u)))
            f = spec.max_grad_norm * np.tanh(norm / spec.max_grad_norm) / norm
            u = jax.tree.map(lambda x, f=f: f * x, u)
        s = jax.tree.map(lambda s_, g, i=i: eta[i] * s_ - lr[i] * g, s, u)
        keep_i = keep[i][:, None] if keep.shape[1] > 1 else keep[i][0]
        a = jax.tree.map(lambda a_, s_, c=keep_i: c * a_ + s_, a, s)
        ys.append(spec.structure.apply(spec.retention.project(a), q[i]))
    return np.stack(ys)


def loop_reference(spec, init, q, k, v, gates):
    """Per-token Python loop, gradients at the memory of the last chunk boundary (the
    definition), one batch row and head at a time: returns y [B, T, H, V]."""
    b, t, h, _ = q.shape
    lk = gates.log_keep
    if lk is None:
        lk = jnp.zeros(gates.lr.shape)
    keep = jnp.exp(lk if lk.ndim == 4 else lk[..., None])
    eta = jnp.exp(gates.log_momentum) if spec.momentum else jnp.zeros(gates.lr.shape)
    ys = np.zeros(v.shape, np.float64)
    for bi in range(b):
        for hi in range(h):
            a = jax.tree.map(lambda x, hi=hi: x[hi], init)
            ys[bi, :, hi] = _loop_stream(
                spec,
                a,
                q[bi, :, hi],
                k[bi, :, hi],
                v[bi, :, hi],
                gates.lr[bi, :, hi],
                eta[bi, :, hi],
                keep[bi, :, hi],
                gates.delta[bi, :, hi],
            )
    return ys


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_chunk_size_one_equals_online(name):
    spec, init, q, k, v, g = inputs(with_chunk(CONFIGS[name], 1), t=9)
    y_chunk, s_chunk = memory_forward(spec, init, q, k, v, g, impl="chunk")
    y_scan, s_scan = memory_forward(spec, init, q, k, v, g, impl="naive")
    tol = TOL_BY_NAME.get(name, TOL)
    assert_close(f"{name}: chunk-1 vs online", y_chunk, y_scan, tol)
    for a, b in zip(jax.tree.leaves(s_chunk.memory), jax.tree.leaves(s_scan.memory), strict=True):
        assert_close(f"{name}: final memory", a, b, tol)


@pytest.mark.parametrize(
    "name,chunk",
    [
        ("linear_l2_decay_momentum", 4),
        ("linear_l2_chan_gd", 5),
        ("mlp_l2_decay_momentum", 4),
        ("moneta", 3),
        ("memora", 16),  # one chunk longer than the sequence
        ("linear_clamped", 4),  # soft-clamped gradient norms (dual form)
    ],
)
def test_chunked_equals_per_token_loop_with_chunk_anchored_gradients(name, chunk):
    with jax.enable_x64(True):  # float64: the forms must agree to rounding, not to 1e-5
        case = inputs(with_chunk(CONFIGS[name], chunk), b=1, t=11, h=2, dtype=jnp.float64)
        spec, init, q, k, v, g = case
        y_chunk, _ = memory_forward(spec, init, q, k, v, g, impl="chunk")
        y_scan, _ = memory_forward(spec, init, q, k, v, g, impl="naive")
        assert y_chunk.dtype == jnp.float64
        ref = loop_reference(spec, init, q, k, v, g)
    assert_close(f"{name}: chunk vs loop", y_chunk, ref, 1e-10, atol=0.0)
    assert_close(f"{name}: scan vs loop", y_scan, ref, 1e-10, atol=0.0)


def test_chunk_size_is_semantic():
    """b > 1 computes a different function from b = 1 (so the tests above can fail)."""
    cfg = CONFIGS["mlp_l2_decay_momentum"]
    y1, _ = memory_forward(*inputs(with_chunk(cfg, 1), theta=0.9), impl="chunk")
    y4, _ = memory_forward(*inputs(with_chunk(cfg, 4), theta=0.9), impl="chunk")
    assert rel_rms(y4, y1) > 1e-3


def _slice_gates(g: WriteGates, sl) -> WriteGates:
    return jax.tree.map(lambda x: x[:, sl], g)


@pytest.mark.parametrize(
    "name,split",  # at a chunk boundary, and mid-chunk (the continuation then runs token-wise)
    [("linear_l2_decay_momentum", 8), ("mlp_l2_decay_momentum", 8), ("memora", 6)],
)
def test_split_and_carry_equals_one_pass(name, split):
    spec, init, q, k, v, g = inputs(with_chunk(CONFIGS[name], 4), t=14)
    y_full, s_full = memory_forward(spec, init, q, k, v, g)
    a, b = slice(0, split), slice(split, None)
    y1, st = memory_forward(spec, init, q[:, a], k[:, a], v[:, a], _slice_gates(g, a))
    y2, st = memory_forward(spec, init, q[:, b], k[:, b], v[:, b], _slice_gates(g, b), state=st)
    tol = TOL_BY_NAME.get(name, TOL)
    assert_close("split outputs", jnp.concatenate([y1, y2], 1), y_full, tol)
    for x, y in zip(jax.tree.leaves(st), jax.tree.leaves(s_full), strict=True):
        assert_close("split final state", x, y, tol)


@pytest.mark.parametrize("name", ["linear_l2_decay_momentum", "mlp_l2_decay_momentum"])
def test_causal(name):
    spec, init, q, k, v, g = inputs(with_chunk(CONFIGS[name], 4), t=12)
    t0 = 6  # mid-chunk: reading end-of-chunk weights would leak tokens 6, 7
    y1, _ = memory_forward(spec, init, q, k, v, g, impl="chunk")
    noise = jax.random.normal(jax.random.key(3), v[:, t0:].shape)
    y2, _ = memory_forward(
        spec, init, q, k.at[:, t0:].add(noise), v.at[:, t0:].add(noise), g, impl="chunk"
    )
    assert float(jnp.max(jnp.abs(y1[:, :t0] - y2[:, :t0]))) == 0.0
    assert float(jnp.max(jnp.abs(y1[:, t0:] - y2[:, t0:]))) > 1e-3


@pytest.mark.parametrize("name", ["mlp_l2_decay_momentum"])
def test_packed_segments_equal_separate_runs(name):
    lengths = [5, 1, 9, 3]  # cross chunk boundaries; a length-1 segment
    spec, init, q, k, v, g = inputs(with_chunk(CONFIGS[name], 4), b=1, t=sum(lengths))
    seg = jnp.asarray(np.repeat(np.arange(len(lengths)), lengths)[None], jnp.int32)
    y_packed, _ = memory_forward(spec, init, q, k, v, g, segment_ids=seg)
    start = 0
    for n in lengths:
        sl = slice(start, start + n)
        y_alone, _ = memory_forward(spec, init, q[:, sl], k[:, sl], v[:, sl], _slice_gates(g, sl))
        assert_close(f"segment at {start}", y_packed[:, sl], y_alone, TOL)
        start += n


@pytest.mark.parametrize("name", ["linear_l2_decay_momentum"])
def test_padding_is_the_identity_on_memory_and_momentum(name):
    spec, init, q, k, v, g = inputs(with_chunk(CONFIGS[name], 4), b=1, t=10)
    # tokens 3 and 4 (mid-chunk) are padding inserted into a 8-token sequence
    valid = jnp.asarray([[1, 1, 1, 0, 0, 1, 1, 1, 1, 1]], bool)
    y_pad, s_pad = memory_forward(spec, init, q, k, v, g, valid=valid)
    keep = np.flatnonzero(np.asarray(valid[0]))
    take = lambda x: x[:, keep]  # noqa: E731
    y_ref, s_ref = memory_forward(spec, init, take(q), take(k), take(v), jax.tree.map(take, g))
    assert_close("outputs at real tokens", y_pad[:, keep], y_ref, TOL)
    for a, b in zip(
        jax.tree.leaves((s_pad.memory, s_pad.momentum)),
        jax.tree.leaves((s_ref.memory, s_ref.momentum)),
        strict=True,
    ):
        assert_close("final memory and momentum", a, b, TOL)
    # a padding step leaves both memory and momentum exactly unchanged
    _, s3 = memory_forward(
        spec, init, q[:, :3], k[:, :3], v[:, :3], _slice_gates(g, slice(0, 3)), impl="naive"
    )
    _, s5 = memory_forward(
        spec, init, q[:, :5], k[:, :5], v[:, :5], _slice_gates(g, slice(0, 5)), valid=valid[:, :5]
    )
    for a, b in zip(
        jax.tree.leaves((s3.memory, s3.momentum)),
        jax.tree.leaves((s5.memory, s5.momentum)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("impl", ["chunk", "naive"])
def test_sequence_shorter_than_a_chunk_still_writes_memory(impl):
    spec, init, q, k, v, g = inputs(with_chunk(CONFIGS["mlp_l2_decay_momentum"], 16), t=3)
    _, st = memory_forward(spec, init, q, k, v, g, impl=impl)
    empty = initial_state(spec, init, q.shape[0])
    moved = [
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(st.memory), jax.tree.leaves(empty.memory), strict=True)
    ]
    assert min(moved) > 1e-4
    assert int(st.pos[0]) == 3


@pytest.mark.parametrize(
    "name",
    [
        "linear_l2_decay_momentum",
        "linear_l2_chan_gd",  # per-channel decay
        "mlp_l2_decay_momentum",  # the per-layer dual of an MLP memory
        "mlp1_huber_decay_gd",
        "yaad",
        "mlp_clamped",  # soft clamp from the rank-1 factors of every layer
    ],
)
def test_dual_form_equals_materialised_memories(name):
    """The dual form (no per-token W) == per-token W from associative scans, on outputs and on
    the final memory and momentum, for linear and MLP memories."""
    cfg = dataclasses.replace(CONFIGS[name], chunk_size=5)
    spec, init, q, k, v, g = inputs(cfg, t=12)
    assert spec.dual
    materialised = dataclasses.replace(spec, dual_form=False)
    assert not materialised.dual
    y_dual, s_dual = memory_forward(spec, init, q, k, v, g, impl="chunk")
    y_mat, s_mat = memory_forward(materialised, init, q, k, v, g, impl="chunk")
    assert_close("dual vs materialised", y_dual, y_mat, TOL)
    for a, b in zip(jax.tree.leaves(s_dual), jax.tree.leaves(s_mat), strict=True):
        assert_close("dual vs materialised state", a, b, TOL)


def test_batch_rows_and_heads_are_independent():
    spec, init, q, k, v, g = inputs(with_chunk(CONFIGS["mlp_l2_decay_momentum"], 4), t=8)
    y, _ = memory_forward(spec, init, q, k, v, g)
    y2, _ = memory_forward(spec, init, q.at[1, :, 0].set(0.0), k, v, g)
    np.testing.assert_array_equal(np.asarray(y[0]), np.asarray(y2[0]))  # other row
    np.testing.assert_array_equal(np.asarray(y[1, :, 1]), np.asarray(y2[1, :, 1]))  # other head


def test_dual_form_rejects_a_structure_with_weights_outside_its_layers():
    """A structure whose `layers` skips a weight cannot run in the dual form: clear error."""

    def init(key, dk, dv):
        return {"W": jnp.zeros((dv, dk)), "b": jnp.zeros((dv,))}

    def layers(matmul, x):
        return matmul("W", x)

    bad = Structure("with_bias", init, lambda p, x: p["W"] @ x + p["b"], layers=layers)
    spec, init_w, q, k, v, g = inputs(CONFIGS["linear_l2_decay_momentum"], t=4)
    spec = dataclasses.replace(spec, structure=bad)
    init_w = {"W": init_w["W"], "b": jnp.zeros(init_w["W"].shape[:2])}
    with pytest.raises(ValueError, match="every weight must be a matrix"):
        memory_forward(spec, init_w, q, k, v, g, impl="chunk")
