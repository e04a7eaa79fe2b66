import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch.mixers import config_class
from memarch.models import LM, LMConfig, generate
from memarch.testing import assert_close

CFG = LMConfig(
    vocab_size=50,
    d_model=32,
    num_heads=2,
    pattern="LSA",
    mlp_hidden=48,
    mixers={"swa": {"window": 4}, "linear_attention": {"chunk_size": 16}},
)


def tokens(b, t, seed=0):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, CFG.vocab_size)


def test_forward_shapes_and_layers():
    model = LM(CFG, rngs=nnx.Rngs(0))
    logits, cache = model(tokens(2, 11))
    assert logits.shape == (2, 11, 50) and cache is None
    assert model.layer_names == ("linear_attention", "swa", "attention")


def test_tied_vs_untied_head():
    tied = LM(CFG, rngs=nnx.Rngs(0))
    untied = LM(LMConfig(**{**CFG.__dict__, "tie_embeddings": False}), rngs=nnx.Rngs(0))
    n_tied = sum(x.size for x in jax.tree.leaves(nnx.state(tied, nnx.Param)))
    n_untied = sum(x.size for x in jax.tree.leaves(nnx.state(untied, nnx.Param)))
    assert n_untied - n_tied == 50 * 32


def test_ratio_stack():
    cfg = LMConfig(
        vocab_size=20,
        d_model=16,
        num_heads=2,
        pattern=None,
        num_layers=4,
        ratio=1,
        linear_mixer="linear_attention",
    )
    assert LM(cfg, rngs=nnx.Rngs(0)).layer_names == ("linear_attention", "attention") * 2


def test_prefill_decode_matches_full_forward():
    model = LM(CFG, rngs=nnx.Rngs(1))
    x = tokens(2, 23, seed=3)
    full, _ = model(x)
    cache = model.init_cache(2, 23)
    outs = []
    y, cache = model(x[:, :9], cache=cache)
    outs.append(y)
    for t in range(9, 23):
        y, cache = model(x[:, t : t + 1], cache=cache)
        outs.append(y)
    assert_close("lm decode", jnp.concatenate(outs, 1), full, 1e-5)


def test_packed_matches_separate():
    model = LM(CFG, rngs=nnx.Rngs(2))
    x = tokens(1, 30, seed=4)
    seg = jnp.asarray([[0] * 12 + [1] * 18])
    packed, _ = model(x, segment_ids=seg)
    a, _ = model(x[:, :12])
    b, _ = model(x[:, 12:])
    assert_close("lm packed", packed, jnp.concatenate([a, b], 1), 1e-5)


def test_greedy_generation_matches_argmax_of_full_forward():
    model = LM(CFG, rngs=nnx.Rngs(3))
    prompt = tokens(2, 5, seed=5)
    out = generate(model, prompt, max_new_tokens=6)
    assert out.shape == (2, 11)
    np.testing.assert_array_equal(out[:, :5], prompt)
    # each generated token is the argmax of a no-cache forward over what precedes it
    logits, _ = model(out[:, :-1])
    np.testing.assert_array_equal(out[:, 5:], jnp.argmax(logits[:, 4:], -1))


def test_sampling_uses_rng_and_temperature():
    model = LM(CFG, rngs=nnx.Rngs(3))
    prompt = tokens(4, 3, seed=6)
    a = generate(model, prompt, max_new_tokens=8, temperature=1.0, rng=jax.random.key(0))
    b = generate(model, prompt, max_new_tokens=8, temperature=1.0, rng=jax.random.key(0))
    c = generate(model, prompt, max_new_tokens=8, temperature=1.0, rng=jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < CFG.vocab_size


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2, "temperature": -1.0}, "temperature"),
        ({"max_new_tokens": 2, "temperature": 0.5}, "rng"),
    ],
)
def test_generate_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        generate(LM(CFG, rngs=nnx.Rngs(0)), tokens(1, 3), **kw)


def test_config_errors():
    with pytest.raises(ValueError, match="either pattern or"):
        LMConfig(pattern="AA", num_layers=2, ratio=1).layer_names()
    with pytest.raises(ValueError, match="vocab_size"):
        LM(LMConfig(vocab_size=1), rngs=nnx.Rngs(0))


def test_two_layers_of_one_mixer_with_different_options():
    cfg = LMConfig(
        vocab_size=50,
        d_model=32,
        num_heads=2,
        pattern="SS",
        mixers={"swa": {"window": 4}},
        layers={1: {"window": 16, "qk_norm": True}},
    )
    model = LM(cfg, rngs=nnx.Rngs(0))
    first, second = (b.mixer for b in model.blocks)
    assert first.config.window == 4 and not first.config.qk_norm
    assert second.config.window == 16 and second.config.qk_norm
    assert nnx.state(first) != nnx.state(second)  # qk_norm adds parameters to layer 1 only
    assert jax.tree.structure(nnx.state(first)) != jax.tree.structure(nnx.state(second))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mixers": {"sw": {}}}, r"model\.mixers\.sw: unknown mixer 'sw' \(did you mean 'swa'"),
        ({"mixers": {"swa": {"windw": 3}}}, r"unknown option 'windw' \(model\.mixers\.swa"),
        ({"mixers": {"swa": {"window": "3"}}}, r"model\.mixers\.swa\.window expects"),
        ({"mixers": {"swa": config_class("gla")()}}, r"model\.mixers\.swa must be a"),
        ({"layers": {3: {"window": 3}}}, r"model\.layers\.3: layer index must be an int"),
        ({"layers": {-1: {"window": 3}}}, r"model\.layers\.-1: layer index"),
        ({"layers": {1: {"window": 0}}}, "window must be a positive int"),
        ({"layers": {0: {"window": 3}}}, r"unknown option 'window' \(model\.layers\.0\.window"),
    ],
)
def test_bad_mixer_options_fail_at_config_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LMConfig(pattern="LS", **kwargs)


REMAT_CFG = LMConfig(
    vocab_size=50,
    d_model=16,
    num_heads=2,
    pattern="LA",
    mlp_hidden=24,
    mixers={"linear_attention": {"chunk_size": 8}},
)


def _loss_and_grads(remat: str):
    """``(loss, grads, lowered, compiled)`` of next-token cross-entropy on a tiny hybrid."""
    import dataclasses

    import optax

    model = LM(dataclasses.replace(REMAT_CFG, remat=remat), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    x = tokens(2, 8, seed=5)

    def loss_and_grads(params, x):
        def loss(p):
            logits, _ = nnx.merge(graphdef, p)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], x[:, 1:]).mean()

        return jax.value_and_grad(loss)(params)

    lowered = jax.jit(loss_and_grads).lower(params, x)
    compiled = lowered.compile()
    loss, grads = compiled(params, x)
    return loss, grads, lowered, compiled


@pytest.fixture(scope="module")
def remat_runs():
    return {mode: _loss_and_grads(mode) for mode in ("none", "full", "dots")}


@pytest.mark.parametrize("mode", ["full", "dots"])
def test_remat_keeps_loss_and_gradients(remat_runs, mode):
    loss, grads, _, _ = remat_runs[mode]
    ref_loss, ref_grads, _, _ = remat_runs["none"]
    assert_close(f"loss ({mode})", loss, ref_loss, 1e-6)
    named = jax.tree_util.tree_flatten_with_path(ref_grads)[0]
    for (path, want), got in zip(named, jax.tree.leaves(grads), strict=True):
        assert_close(f"grad {jax.tree_util.keystr(path)} ({mode})", got, want, 1e-5)


def test_remat_changes_the_compiled_program(remat_runs):
    """Each rematerialised block is one optimisation barrier in the lowered program, and the
    backward pass recomputes matmuls: all of them with ``full``, only those with batch
    dimensions (attention scores) with ``dots``, which keeps the projections' results."""
    text = {m: run[2].as_text() for m, run in remat_runs.items()}
    layers = len(REMAT_CFG.layer_names())
    assert text["none"].count("optimization_barrier") == 0
    assert text["full"].count("optimization_barrier") == layers
    assert text["dots"].count("optimization_barrier") == layers
    dots = {m: t.count("stablehlo.dot_general") for m, t in text.items()}
    assert dots["none"] < dots["dots"] < dots["full"], dots
    temp = {m: run[3].memory_analysis().temp_size_in_bytes for m, run in remat_runs.items()}
    assert temp["full"] < temp["none"], temp  # fewer activations live at once


@pytest.mark.parametrize("bad", ["all", "", None, "Full", ["full"]])
def test_remat_rejects_unknown_modes(bad):
    import dataclasses

    with pytest.raises(ValueError, match=r"model\.remat must be one of \['none', 'full', 'dots'\]"):
        dataclasses.replace(CFG, remat=bad)
