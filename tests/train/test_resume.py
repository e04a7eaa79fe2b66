"""What a resume may change: ``model.remat`` is how the model runs, not which parameters it
has, so a run may resume with another activation-checkpointing mode."""

from __future__ import annotations

import dataclasses
import json

import pytest
from tiny_run import TINY

from memarch.train.config import config_to_json
from memarch.train.resume import check_resume_config, config_changes


@pytest.mark.parametrize(("saved", "requested"), [("none", "full"), ("dots", "none")])
def test_remat_change_is_allowed_on_resume(saved, requested):
    old = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, remat=saved))
    new = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, remat=requested))
    old_json = json.loads(config_to_json(old))
    (change,) = config_changes(old_json, json.loads(config_to_json(new)))
    assert (change.key, change.kind) == ("model.remat", "allowed")
    lines = check_resume_config(old_json, new, allow_schedule_change=False, where="run")
    assert lines == [
        f"resume changes allowed setting model.remat: saved {saved!r}, requested {requested!r}"
    ]


def test_other_model_changes_stay_structural():
    old = json.loads(config_to_json(TINY))
    new = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, d_model=48))
    with pytest.raises(ValueError, match=r"model\.d_model: saved 32, requested 48"):
        check_resume_config(old, new, allow_schedule_change=False, where="run")
