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


def test_register_new_mixer_and_reject_duplicates(monkeypatch):
    from memarch.mixers import _registry

    monkeypatch.setattr(_registry, "_MIXERS", dict(_registry._MIXERS))  # leave no trace

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        pass

    @mixers.register("_test_identity", config=Cfg)
    class Identity(nnx.Module):
        def __init__(self, config, *, d_model, num_heads, rngs):
            pass

    assert "_test_identity" in mixers.available()
    with pytest.raises(ValueError, match="already registered"):
        mixers.register("_test_identity", config=Cfg)(Identity)
