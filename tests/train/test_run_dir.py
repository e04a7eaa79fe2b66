"""Run directories: a saved config.json round-trips for every config; unknown keys fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memarch.train.config import TrainConfig, config_to_json, load_config
from memarch.train.run_dir import config_from_dict, load_run_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.name)
def test_saved_config_json_round_trips(path):
    cfg = load_config(path)
    again = config_from_dict(TrainConfig, json.loads(config_to_json(cfg)))
    assert again == cfg


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys.*'bogus'"):
        config_from_dict(TrainConfig, {"data": {"bogus": 1}})


def test_config_json_of_an_earlier_memarch_loads(tmp_path):
    """``model.mixer_options`` (before typed per-mixer options) reads as ``model.mixers``."""
    cfg = json.loads(config_to_json(TrainConfig()))
    cfg["model"].pop("mixers")
    cfg["model"]["mixer_options"] = {"swa": {"window": 8}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = load_run_config(tmp_path)
    assert loaded.model.mixers["swa"].window == 8
