import dataclasses

import pytest
from flax import nnx

from memarch import mixers


def test_foundation_mixers_registered():
    assert {"attention", "swa", "linear_attention"} <= set(mixers.available())
    assert mixers.letters()["A"] == "attention"
    assert mixers.letters()["L"] == "linear_attention"
    assert mixers.letters()["S"] == "swa"


def test_build_passes_options_to_config():
    m = mixers.build("swa", d_model=16, num_heads=2, rngs=nnx.Rngs(0), window=3)
    assert m.config.window == 3 and isinstance(m, mixers.Mixer)


def test_unknown_mixer_names_available():
    with pytest.raises(ValueError, match=r"unknown mixer 'atention'.*did you mean 'attention'"):
        mixers.build("atention", d_model=16, num_heads=2, rngs=nnx.Rngs(0))


def test_unknown_option_names_accepted_options():
    with pytest.raises(ValueError, match=r"unknown option 'windw'.*accepted options"):
        mixers.build("swa", d_model=16, num_heads=2, rngs=nnx.Rngs(0), windw=3)


@pytest.mark.parametrize("window", [0, -4])
def test_window_must_be_positive(window):
    with pytest.raises(ValueError, match="window must be a positive int"):
        mixers.build("swa", d_model=16, num_heads=2, rngs=nnx.Rngs(0), window=window)


@pytest.mark.parametrize("bad", [{"d_model": 0}, {"num_heads": 0}])
def test_bad_widths(bad):
    kw = {"d_model": 16, "num_heads": 2, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        mixers.build("attention", rngs=nnx.Rngs(0), **kw)


@pytest.fixture
def identity_mixer():
    """A user mixer ``_test_identity`` registered for one test (then removed: no trace)."""

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        pass

    @mixers.register("_test_identity", config=Cfg)
    class Identity(nnx.Module):
        def __init__(self, config, *, d_model, num_heads, rngs):
            self.config = config

    yield Identity, Cfg
    mixers.unregister("_test_identity")


def test_register_new_mixer_and_reject_duplicates(identity_mixer):
    Identity, Cfg = identity_mixer
    assert "_test_identity" in mixers.available()
    with pytest.raises(ValueError, match="already registered"):
        mixers.register("_test_identity", config=Cfg)(Identity)


def test_builtin_mixers_cannot_be_replaced_or_removed():
    with pytest.raises(ValueError, match="built-in mixer"):
        mixers.register("gla", config=mixers.config_class("gla"))(nnx.Module)
    with pytest.raises(ValueError, match="built-in and cannot be removed"):
        mixers.unregister("gla")


def _all_mixer_names():
    return mixers.available()


@pytest.mark.parametrize("name", _all_mixer_names())
def test_every_registered_mixer_builds_from_its_defaults(name):
    """Parametrised over the registry: a new built-in mixer is covered without a new test."""
    cfg = mixers.config_class(name)()
    m = mixers.build(name, d_model=32, num_heads=2, rngs=nnx.Rngs(0), config=cfg)
    assert m.config == cfg and mixers.make_config(name) == cfg


def test_user_mixer_builds_alike(identity_mixer):
    Identity, Cfg = identity_mixer
    m = mixers.build("_test_identity", d_model=8, num_heads=1, rngs=nnx.Rngs(0))
    assert isinstance(m, Identity) and m.config == Cfg()


def test_make_config_checks_option_types():
    with pytest.raises(ValueError, match=r"gla\.chunk_size expects int; got 'big'"):
        mixers.make_config("gla", chunk_size="big")
    assert mixers.make_config("moneta", p=3).p == 3.0  # an int is accepted as a float


def test_build_rejects_config_of_another_mixer():
    with pytest.raises(ValueError, match="either config="):
        mixers.build(
            "swa", d_model=16, num_heads=2, rngs=nnx.Rngs(0), config=mixers.make_config("gla")
        )
