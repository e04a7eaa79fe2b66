import json
from pathlib import Path

import pytest

from memarch.train.config import (
    TrainConfig,
    apply_overrides,
    config_to_json,
    load_config,
)

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
            "model.mixer_options.swa.window=8",
            "optim.b1=1",
        ],
    )
    assert cfg.optim.learning_rate == 3e-4 and cfg.num_steps == 7
    assert cfg.model.pattern == "LLA" and cfg.data.train_slices == ((32, 2),)
    assert cfg.model.mixer_options == {"swa": {"window": 8}}
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
