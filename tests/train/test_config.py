import json
from pathlib import Path

import pytest

from memarch import mixers
from memarch.train.config import (
    TrainConfig,
    apply_overrides,
    config_to_json,
    load_config,
)
from memarch.train.run_dir import config_from_dict

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads_and_resolves_layers(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.model.layer_names()


def test_overrides_nested_typed_and_literal():
    cfg = apply_overrides(
        TrainConfig(),
        [
            "optim.learning_rate=3e-4",
            "num_steps=7",
            "model.pattern=LLA",
            "data.train_slices=[(32, 2)]",
            "model.mixers.swa.window=8",
            "optim.b1=1",
        ],
    )
    assert cfg.optim.learning_rate == 3e-4 and cfg.num_steps == 7
    assert cfg.model.pattern == "LLA" and cfg.data.train_slices == ((32, 2),)
    assert cfg.model.mixers == {"swa": mixers.config_class("swa")(window=8)}
    assert cfg.optim.b1 == 1.0 and isinstance(cfg.optim.b1, float)


def test_unknown_key_names_the_closest():
    with pytest.raises(
        ValueError,
        match=r"unknown config key 'optim.learning_rat'.*"
        r"'optim.learning_rate'",
    ):
        apply_overrides(TrainConfig(), ["optim.learning_rat=1e-3"])


@pytest.mark.parametrize(
    "item,match",
    [
        ("num_steps=ten", "num_steps.*expects"),
        ("batch_size=1.5", "batch_size.*expects"),
        ("num_steps", "key.sub=value"),
        ("optim.learning_rate.x=1", "not a section"),
    ],
)
def test_bad_overrides(item, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(TrainConfig(), [item])


def test_json_round_trip_is_valid_json():
    data = json.loads(config_to_json(TrainConfig()))
    assert data["optim"]["learning_rate"] == TrainConfig().optim.learning_rate


def test_load_config_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        load_config(bad)


def test_variant_sets_pattern_seed_and_lr_together():
    from memarch.train.config import variant

    base = TrainConfig()
    cfg = variant(base, name="x", pattern="LA", seed=3, learning_rate=1e-2)
    assert (cfg.name, cfg.model.pattern, cfg.seed, cfg.data.seed) == ("x", "LA", 3, 3)
    assert cfg.optim.learning_rate == 1e-2 and cfg.optim.warmup_steps == base.optim.warmup_steps
    assert variant(base) == base


def test_per_mixer_and_per_layer_overrides():
    cfg = apply_overrides(
        TrainConfig(),
        [
            "model.pattern=RRRS",
            "model.mixers.gla.chunk_size=32",
            "model.layers.3.window=128",
            "model.layers.1.chunk_size=16",
            "model.mixers.moneta.theta_max=1",
        ],
    )
    m = cfg.model
    assert m.mixers["gla"] == mixers.make_config("gla", chunk_size=32)
    assert m.layers == {1: {"chunk_size": 16}, 3: {"window": 128}}
    assert [m.layer_options(i).chunk_size for i in range(3)] == [32, 16, 32]
    assert m.layer_options(3).window == 128
    theta_max = m.mixers["moneta"].theta_max
    assert theta_max == 1.0 and isinstance(theta_max, float)


@pytest.mark.parametrize(
    "item,match",
    [
        ("model.mixers.moneta.p=three", r"model\.mixers\.moneta\.p expects float; got 'three'"),
        (
            "model.mixers.glx.chunk_size=3",
            r"model\.mixers\.glx: unknown mixer 'glx' "
            r"\(did you mean 'gla'\?\); available mixers: \[.*'gla'",
        ),
        (
            "model.mixers.gla.chunk_sise=3",
            r"unknown option 'chunk_sise' "
            r"\(model\.mixers\.gla\.chunk_sise\) \(did you mean 'chunk_size'\?\); accepted",
        ),
        ("model.layers.2.window=8", r"model\.layers\.2: layer index must be an int in \[0, 2\)"),
        (
            "model.layers.1.windw=8",
            r"unknown option 'windw' \(model\.layers\.1\.windw\) "
            r"\(did you mean 'window'\?\)",
        ),
        ("model.layers.1.window=wide", r"model\.layers\.1\.window expects int \| None"),
    ],
)
def test_bad_mixer_option_overrides(item, match):
    """Each bad per-mixer or per-layer option fails at config time, naming the dotted key."""
    base = apply_overrides(TrainConfig(), ["model.pattern=LS"])
    with pytest.raises(ValueError, match=match):
        apply_overrides(base, [item])


def test_per_layer_options_round_trip_through_json():
    cfg = apply_overrides(
        TrainConfig(),
        ["model.pattern=SS", "model.mixers.swa.window=4", "model.layers.1.window=8"],
    )
    back = config_from_dict(TrainConfig, json.loads(config_to_json(cfg)))
    assert back == cfg and back.model.layers == {1: {"window": 8}}
