"""Mixture-of-Memories mixer (memarch.mixers.mom): routing, memory time, cache, aux loss.

Memory m of a MoM as a base mixer (m = M: the shared memory): the base's shared parameters
(``mom.base``: q_proj, conv, output head, GDN ``A_log``/``dt_bias``) with memory m's write
parameters (``mom.memories``: slice m of each stacked parameter, e.g. ``k_proj``, ``v_proj``,
GDN ``beta_proj``/``a_proj``, GLA ``gate_down``/``gate_up``), as ``mom.memory_mixer(m)``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import memarch.mixers.mom  # noqa: F401  (registers "mom")
from memarch import mixers
from memarch.mixers import conformance
from memarch.mixers.linear_attention import LinearAttention, LinearAttentionConfig
from memarch.mixers.mom import MoMConfig, _permute_rows, _take_rows, memory_bases
from memarch.ops import gated_delta_rule
from memarch.testing import assert_close
from memarch.train.step import forward

D, H, T = 32, 2, 24
MOM_FIELDS = {f.name for f in dataclasses.fields(MoMConfig)}

# Jit-compiled calls: one compile per (config, shape), reused across tests and weights.
run = nnx.jit(lambda m, x: m(x)[0])
run_packed = nnx.jit(lambda m, x, s: m(x, segment_ids=s)[0])
run_cache = nnx.jit(lambda m, x, c: m(x, cache=c))
run_forward = nnx.jit(lambda m, x: forward(m, {"inputs": x}))  # (y, aux, stats) as trained


def mom_options(**opts):
    """MoM options with the base's options (any name MoMConfig lacks) in ``base_options``."""
    base = {k: opts.pop(k) for k in list(opts) if k not in MOM_FIELDS}
    return {**opts, "base_options": base} if base else opts


def build(**opts):
    opts.setdefault("chunk_size", 16)
    return mixers.build("mom", d_model=D, num_heads=H, rngs=nnx.Rngs(0), **mom_options(**opts))


def x_in(b=2, t=T, seed=3):
    rng = np.random.default_rng(seed)  # numpy: no per-shape compile of a jax RNG
    return jnp.asarray(rng.standard_normal((b, t, D)), jnp.float32)


def base_from_memory(mom, m):
    """A base mixer, built by the registry, carrying memory m's weights (m = M: shared)."""
    ref = mixers.build(
        mom.config.base, d_model=D, num_heads=H, rngs=nnx.Rngs(1), **mom.config.base_kwargs()
    )
    nnx.update(ref, nnx.state(mom.memory_mixer(m)))
    return ref


def dense_memory_o(ref, x):
    """The pre-norm output o [B, T, H, V] of base GDN mixer ``ref`` over the full sequence,
    built from the base mixer's own parts (independent of the MoM code)."""
    b, t, _ = x.shape
    h, dk, dv = ref.num_heads, ref.key_dim, ref.value_dim
    qkv, _ = ref.conv(jnp.concatenate([ref.q_proj(x), ref.k_proj(x), ref.v_proj(x)], -1))
    q, k, v = jnp.split(qkv, [h * dk, 2 * h * dk], -1)
    q, k, v, gates = ref.prepare(
        x, q.reshape(b, t, h, dk), k.reshape(b, t, h, dk), v.reshape(b, t, h, dv)
    )
    return gated_delta_rule(q, k, v, *gates, impl="naive")[0]


def base_on_subsequences(mom, m, x, tokens):
    """Base mixer of memory m run on each row's ``tokens[b]`` alone -> list of [n_b, D]."""
    sub = np.zeros(x.shape, np.float32)  # zero-padded at the end (causal: harmless)
    for b, ts in enumerate(tokens):
        sub[b, : len(ts)] = np.asarray(x[b, ts])
    y = np.asarray(run(base_from_memory(mom, m), jnp.asarray(sub)))
    return [y[b, : len(ts)] for b, ts in enumerate(tokens)]


def route_by_channel0(mom, scale=2.0):
    """Router that looks at x[..., 0] only (top-1 of M=2: memory 0 iff x0 > 0)."""
    w = np.zeros((D, mom.config.num_memories), np.float32)
    w[0, 0], w[0, 1] = scale, -scale
    mom.router[...] = jnp.asarray(w)


# --- equivalences with the base mixers ------------------------------------------------------
@pytest.mark.parametrize(
    "base,opts",
    [
        ("gated_deltanet", {}),
        ("gla", {}),
        ("gated_deltanet", {"output_gate": False, "dt_min": 1e-3, "dt_max": 1e-2}),
        ("gla", {"output_gate": False, "gate_bias_init": 4.0}),
    ],
)
def test_single_memory_top1_equals_the_base_mixer(base, opts):
    mom = build(num_memories=1, top_k=1, shared_memory=False, base=base, **opts)
    ref = base_from_memory(mom, 0)
    x = x_in()  # T = 24 crosses a chunk boundary (chunk 16)
    assert_close(f"MoM(1, 1) vs {base}", run(mom, x), run(ref, x), 1e-6)


def test_each_memory_equals_the_base_op_on_its_routed_subsequence():
    """k = 1, no shared memory: y_t = base mixer of memory m_t run on m_t's tokens alone
    (token order, conv and state all in memory time)."""
    mom = build(num_memories=3, top_k=1, shared_memory=False)
    x = x_in()
    y = np.asarray(run(mom, x))
    idx = np.asarray(mom.route(x)[2][..., 0])
    for m in range(3):
        tokens = [np.flatnonzero(idx[b] == m) for b in range(2)]
        assert all(len(ts) > 1 for ts in tokens), "choose a seed where every memory gets tokens"
        for b, y_ref in enumerate(base_on_subsequences(mom, m, x, tokens)):
            assert_close(f"memory {m} row {b}", y[b, tokens[b]], y_ref, 1e-5)


def test_top_k_equals_num_memories_with_uniform_router_is_a_dense_mixture():
    mom = build(num_memories=3, top_k=3, shared_memory=True)
    mom.router[...] = jnp.zeros_like(mom.router[...])  # uniform softmax: every weight 1/3
    x = x_in()
    refs = [base_from_memory(mom, m) for m in range(4)]  # 3 routed + shared (m = 3)
    o_of = nnx.jit(dense_memory_o)
    o = sum(o_of(refs[m], x) for m in range(3)) / 3 + o_of(refs[3], x)
    r = refs[0]
    y_ref = r.o_proj(r.o_norm(o, r.g_proj(x).reshape(o.shape)).reshape(2, T, -1))
    assert_close("MoM(k = M, uniform) vs dense mixture", run(mom, x), y_ref, 1e-5)


# --- memory time: the conv and the state see the memory's own tokens only ------------------
def test_short_conv_does_not_leak_across_memories_or_batch_rows():
    mom = build(num_memories=2, top_k=1, shared_memory=False)
    route_by_channel0(mom)
    x = x_in()
    mem0 = np.asarray(x[..., 0] > 0)
    # perturb every channel but the routing one, on memory-0 tokens of row 0 only
    delta = x_in(seed=9).at[..., 0].set(0.0)
    sel = jnp.asarray(mem0 & (np.arange(2) == 0)[:, None])[..., None]
    y1, y2 = np.asarray(run(mom, x)), np.asarray(run(mom, x + jnp.where(sel, delta, 0.0)))
    untouched = ~mem0 | (np.arange(2) == 1)[:, None]  # memory-1 tokens and all of row 1
    assert np.max(np.abs(y1[untouched] - y2[untouched])) <= 1e-6
    assert np.max(np.abs(y1[~untouched] - y2[~untouched])) > 1e-3


@pytest.mark.parametrize("base", ["gated_deltanet", "gla"])
def test_packed_segments_equal_separate_sequences(base):
    """Each memory's state and conv restart at every packed-sequence start."""
    mom = build(base=base, num_memories=3, top_k=2)
    x = x_in(1)
    lengths = [7, 1, 9, 7]
    seg = jnp.asarray(np.repeat(np.arange(4) * 3 + 1, lengths)[None], jnp.int32)
    packed = np.asarray(run_packed(mom, x, seg))[0]
    starts = np.cumsum([0, *lengths])
    alone = np.zeros((4, T, D), np.float32)  # each segment alone, zero-padded to T
    for i, (a, n) in enumerate(zip(starts, lengths, strict=False)):
        alone[i, :n] = np.asarray(x[0, a : a + n])
    y_alone = np.asarray(run(mom, jnp.asarray(alone)))
    for i, (a, n) in enumerate(zip(starts, lengths, strict=False)):
        assert_close(f"packed segment {i}", packed[a : a + n], y_alone[i, :n], 1e-5)


# --- unrouted memories are bit-identical ---------------------------------------------------
def _never_route_last_memory(mom):
    w = np.asarray(mom.router[...]).copy() * 0.3
    w[0, -1] = -100.0  # with x[..., 0] = 3 memory M-1 scores ≈ −300: never in the top-k
    mom.router[...] = jnp.asarray(w)


def test_unrouted_memory_state_is_bit_identical_after_prefill_and_decode():
    mom = build(num_memories=4, top_k=2)
    _never_route_last_memory(mom)
    x = x_in(t=15).at[..., 0].set(3.0)
    rng = np.random.default_rng(4)
    c0 = mom.init_cache(2, 15)
    c0 = c0.replace(  # a cache that is not all zeros, so "unchanged" is meaningful
        **{
            f: jnp.asarray(rng.standard_normal(getattr(c0, f).shape), jnp.float32)
            for f in ("state", "conv", "shared_state", "shared_conv")
        }
    )
    _, c1 = run_cache(mom, x[:, :12], c0)  # prefill path
    s0, s1 = np.asarray(c0.state), np.asarray(c1.state)
    np.testing.assert_array_equal(s1[:, 3], s0[:, 3])
    np.testing.assert_array_equal(np.asarray(c1.conv)[:, 3], np.asarray(c0.conv)[:, 3])
    assert not np.array_equal(s1[:, :3], s0[:, :3])
    idx = np.asarray(mom.route(x)[2])  # [B, T, k]
    c = c1
    for i in range(12, 15):  # decode path: exactly the selected memories change
        _, c_next = run_cache(mom, x[:, i : i + 1], c)
        s_old, s_new = np.asarray(c.state), np.asarray(c_next.state)
        k_old, k_new = np.asarray(c.conv), np.asarray(c_next.conv)
        for b in range(2):
            chosen = set(idx[b, i].tolist())
            assert 3 not in chosen
            for m in range(4):
                same_s = np.array_equal(s_new[b, m], s_old[b, m])
                same_c = np.array_equal(k_new[b, m], k_old[b, m])
                assert same_s == same_c == (m not in chosen), (i, b, m, chosen)
        assert not np.array_equal(np.asarray(c_next.shared_state), np.asarray(c.shared_state))
        c = c_next


# --- capacity ------------------------------------------------------------------------------
def test_capacity_one_drops_nothing():
    mom = build(num_memories=4, top_k=2, capacity_factor=1.0)
    _, w, idx = mom.route(x_in())
    w, idx = mom._pairs(w, idx)
    lay = mom._packed_layout(idx)
    assert bool(jnp.all(lay.pair_ok)) and bool(jnp.all(lay.valid))
    slots, kept = mom._slot_layout(idx, T)
    assert bool(jnp.all(slots.pair_ok)) and int(kept.sum()) == 2 * T * 3


def test_smaller_capacity_drops_the_oldest_tokens():
    # C = ceil(0.5 · 24) = 12; memory 0 gets 16 tokens (its 4 oldest dropped), memory 1 gets 8
    mom = build(num_memories=2, top_k=1, shared_memory=False, capacity_factor=0.5)
    route_by_channel0(mom)
    sign = np.ones(T, np.float32)
    sign[[1, 6, 9, 13, 16, 19, 20, 23]] = -1.0
    x = x_in().at[..., 0].set(jnp.asarray(sign))
    y, _, stats = run_forward(mom, x)
    y_pre, _ = run_cache(mom, x, mom.init_cache(2, T))  # the slot (prefill) layout
    assert_close("prefill vs forward with capacity", y_pre, y, 1e-5)
    assert float(stats["memory_drop_frac"]) == pytest.approx(4 / 24)
    y = np.asarray(y)
    t0, t1 = np.flatnonzero(sign > 0), np.flatnonzero(sign < 0)
    assert np.all(y[:, t0[:4]] == 0.0)  # dropped: no memory output, RMSNorm(0) = 0
    kept = t0[4:]
    ref0 = base_on_subsequences(mom, 0, x, [kept, kept])
    ref1 = base_on_subsequences(mom, 1, x, [t1, t1])
    for b in range(2):
        assert_close("kept newest 12 of memory 0", y[b, kept], ref0[b], 1e-5)
        assert_close("memory 1 (under capacity)", y[b, t1], ref1[b], 1e-5)


# --- protocol ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "opts",
    [
        {"base": "gla", "num_memories": 3, "top_k": 2},
        {"base": "linear_attention", "shared_memory": False, "short_conv": 2},
        {"router_conv": 3},
    ],
)
def test_prefill_decode_and_causality(opts):
    m = build(**opts)  # the conformance checks jit-compile the mixer
    x = x_in(2, 21, seed=6)
    conformance.check_decode_matches_full(m, x, 9, tol=1e-5)
    conformance.check_causal(m, x, 11)


# --- router gradients and the auxiliary loss -----------------------------------------------
def test_gradients_reach_the_router_through_output_and_aux_loss():
    mom = build()
    x = x_in()
    graphdef, state = nnx.split(mom)

    def losses(state):  # [Σ y², sown aux loss] of one training forward
        y, aux, _ = forward(nnx.merge(graphdef, state), {"inputs": x})
        return jnp.stack([jnp.sum(y**2), aux])

    jac = jax.jit(jax.jacrev(losses))(state)["router"][...]  # [2, D, M]
    assert float(jnp.max(jnp.abs(jac[0]))) > 0, "no gradient to W_g through the output"
    assert float(jnp.max(jnp.abs(jac[1]))) > 0, "no gradient to W_g through the aux loss"
    _, aux, stats = run_forward(mom, x)
    assert set(stats) == {"router_entropy", "memory_load_max"}  # no drops at capacity 1
    assert 0 < float(stats["router_entropy"]) <= np.log(4) + 1e-6
    assert 1.0 <= float(stats["memory_load_max"]) <= 2.0
    assert float(aux) == pytest.approx(0.01 * float(mom.aux_loss(*mom.route(x)[1:])), rel=1e-5)


def test_aux_loss_is_top_k_when_balanced_and_grows_with_imbalance():
    mom = build(num_memories=4, top_k=2)
    half = jnp.full((1, 4, 2), 0.5)
    balanced = jnp.array([[[0, 1], [2, 3], [1, 0], [3, 2]]])
    assert float(mom.aux_loss(half, balanced)) == pytest.approx(2.0)  # = k
    skewed = jnp.array([[[0, 1], [2, 3], [0, 1], [0, 1]]])  # loads 3, 3, 1, 1
    collapsed = jnp.array([[[0, 1]] * 4])  # loads 4, 4, 0, 0
    values = [float(mom.aux_loss(half, i)) for i in (balanced, skewed, collapsed)]
    assert values[0] < values[1] < values[2] == pytest.approx(4.0)  # = M when collapsed
    # the weighted value is what the trainer receives
    mom.router[...] = jnp.zeros_like(mom.router[...])  # ties -> memories 0, 1 for every token
    _, aux, stats = run_forward(mom, x_in())
    assert float(aux) == pytest.approx(0.01 * 4.0)
    assert float(stats["memory_load_max"]) == pytest.approx(2.0)


# --- configuration -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "opts,field",
    [
        ({"top_k": 5}, "top_k"),
        ({"num_memories": 0}, "num_memories"),
        ({"base": "mamba"}, "base"),
        ({"capacity_factor": 0.0}, "capacity_factor"),
        ({"capacity_factor": 1.5}, "capacity_factor"),
        ({"aux_loss_weight": -1.0}, "aux_loss_weight"),
        ({"impl": "fast"}, "impl"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"short_conv": -1}, "short_conv"),
        ({"dt_min": 0.2}, "dt_min"),
        ({"router_conv": -1}, "router_conv"),
    ],
)
def test_bad_config_names_the_field(opts, field):
    with pytest.raises(ValueError, match=field):
        MoMConfig(**mom_options(**opts))
    with pytest.raises(ValueError, match=field):
        build(**opts)


def test_router_conv_starts_as_the_plain_router_and_routes_by_the_previous_token():
    plain, conv = build(), build(router_conv=2)
    nnx.update(conv, nnx.state(plain))  # same weights; the router conv stays at identity
    assert_close("identity-initialised router conv", run(conv, x_in()), run(plain, x_in()), 1e-6)
    # taps [0, 1]: the router reads x_{t−1}, so token t is routed as token t−1 was
    conv.router_conv.weight[...] = jnp.zeros_like(conv.router_conv.weight[...]).at[1].set(1.0)
    x = x_in()
    shifted = jnp.pad(x[:, :-1], ((0, 0), (1, 0), (0, 0)))
    np.testing.assert_array_equal(conv.route(shifted)[2], plain.route(shifted)[2])
    seg = jnp.asarray(np.repeat([[0] * 10 + [1] * 14], 2, axis=0))
    r_in, _ = conv.router_conv(x, segment_ids=seg)
    np.testing.assert_array_equal(r_in[:, 10], 0)  # a segment start sees no earlier token
    packed = run_packed(conv, x, seg)
    assert_close("router conv, packed segment 2", packed[:, 10:], run(conv, x[:, 10:]), 1e-5)


def test_initial_forgetting_options():
    gdn = build(dt_min=1e-3, dt_max=1e-2)
    dt = np.asarray(jax.nn.softplus(gdn.base.dt_bias[...]))
    assert np.all((dt >= 1e-3 * 0.999) & (dt <= 1e-2 * 1.001))
    gla = build(base="gla", gate_bias_init=4.0)
    bias = gla.memories.gate_up.bias[...]  # [S·H·K]: routed memories and the shared one
    assert bias.shape == (gla.num_slots * H * gla.key_dim,)
    np.testing.assert_allclose(bias, 4.0)


def test_registered_with_pattern_letter_m():
    assert mixers.letters()["M"] == "mom"
    assert isinstance(build(), mixers.Mixer)


def test_permutation_gather_gradient_is_the_inverse_gather():
    rng = np.random.default_rng(0)
    perm = np.stack([rng.permutation(7) for _ in range(2)]).astype(np.int32)
    inv = np.argsort(perm, axis=1).astype(np.int32)
    a, ct = (jnp.asarray(rng.standard_normal((2, 7, 3)), jnp.float32) for _ in range(2))
    g1 = jax.grad(lambda a: jnp.sum(_permute_rows(a, perm, inv) * ct))(a)
    g2 = jax.grad(lambda a: jnp.sum(_take_rows(a, perm) * ct))(a)
    np.testing.assert_array_equal(_permute_rows(a, perm, inv), _take_rows(a, perm))
    np.testing.assert_array_equal(g1, g2)


# --- any matrix-memory mixer is a base ------------------------------------------------------
FIVE_BASES = {"linear_attention", "gla", "deltanet", "gated_deltanet", "hgrn2"}


def test_bases_are_the_registered_matrix_memory_mixers():
    bases = set(memory_bases())
    assert FIVE_BASES <= bases
    assert not {"mom", "attention", "swa", "fox"} & bases


@pytest.mark.parametrize("base", memory_bases())
def test_conformance_over_every_base(base):
    """The protocol checks of tests/mixers/test_protocol.py, for MoM(4, 2) + shared over each
    base (chunk 16: the packed buffer and the segments cross chunk boundaries)."""
    m = build(base=base)
    conformance.check_decode_matches_full(m, x_in(2, 37, seed=1), 21)
    conformance.check_packed_matches_separate(m, x_in(1, 45, seed=2), [16, 1, 20, 8])
    conformance.check_causal(m, x_in(2, 30, seed=3), 13)
    conformance.check_gradients_finite(m, x_in(2, 20, seed=4))


@pytest.mark.parametrize("base", ["deltanet", "hgrn2", "linear_attention"])
def test_single_memory_top1_equals_each_other_base(base):
    mom = build(num_memories=1, top_k=1, shared_memory=False, base=base)
    x = x_in()
    assert_close(f"MoM(1, 1) vs {base}", run(mom, x), run(base_from_memory(mom, 0), x), 1e-6)


class _ScaledKeyLinearAttention(LinearAttention):
    """A matrix-memory mixer MoM has never heard of: linear attention writing 0.5·φ(k)."""

    def feature_map(self, q, k):
        q, k = super().feature_map(q, k)
        return q, 0.5 * k


def test_a_later_registered_recurrent_mixer_is_a_base():
    name = "_mom_test_scaled_key_la"
    if name not in mixers.available():  # registered once per process, without a letter
        mixers.register(name, config=LinearAttentionConfig)(_ScaledKeyLinearAttention)
    assert name in memory_bases()
    mom = build(num_memories=1, top_k=1, shared_memory=False, base=name)
    ref = base_from_memory(mom, 0)
    assert isinstance(ref, _ScaledKeyLinearAttention)
    assert_close("MoM(1, 1) vs the new mixer", run(mom, x_in()), run(ref, x_in()), 1e-6)
    conformance.check_decode_matches_full(build(base=name), x_in(2, 21, seed=6), 9)


def test_memory_mixer_carries_the_shared_and_the_memory_parameters():
    mom = build(num_memories=3, top_k=2)
    for m in range(4):  # m = 3: the shared memory
        ref = mom.memory_mixer(m)
        np.testing.assert_array_equal(ref.k_proj.kernel[...], mom.memories.k_proj.kernel[m])
        np.testing.assert_array_equal(ref.a_proj.kernel[...], mom.memories.a_proj.kernel[m])
        np.testing.assert_array_equal(ref.q_proj.kernel[...], mom.base.q_proj.kernel[...])
        np.testing.assert_array_equal(ref.A_log[...], mom.base.A_log[...])
    k = np.asarray(mom.memories.k_proj.kernel[...])
    assert not np.array_equal(k[0], k[1])  # each memory its own initialisation
    with pytest.raises(ValueError, match="m must be in"):
        mom.memory_mixer(4)


def test_base_options_are_the_base_mixers_options():
    gla = build(base="gla", gate_rank=4, gate_normalizer=8.0)
    assert gla.memories.gate_down.kernel.shape == (gla.num_slots, D, 4)
    assert gla.base.config.gate_normalizer == 8.0
    assert build().value_dim == build().key_dim  # MoM's default expand_v = 1 (GDN's is 2)
    assert build(expand_v=2.0).value_dim == 2 * build().key_dim
    with pytest.raises(ValueError, match="base_options.*gate_rank"):
        MoMConfig(base="gated_deltanet", base_options={"gate_rank": 4})  # a gla option
    cfg = MoMConfig(base_options={"head_dim": 8, "dt_max": 1e-2})
    assert cfg.base_options == (("dt_max", 1e-2), ("head_dim", 8))  # hashable, order-free
    assert hash(cfg) == hash(MoMConfig(base_options={"dt_max": 1e-2, "head_dim": 8}))
    with pytest.raises(ValueError, match="base_options"):
        MoMConfig(base_options=3)
