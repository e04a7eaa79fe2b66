"""A ``gs://`` workdir end to end, offline: a short run with checkpoints, metrics and
TensorBoard events writes every file under the URL and nothing locally; resume and
:func:`load_run` read it back.

The bucket is a local folder standing in for Google Cloud Storage (``tests/fake_gcs.py`` says
which two calls it redirects; everything else runs as against a real bucket).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from etils import epath
from fake_gcs import BUCKET, local_files
from fake_gcs import fake_gcs as fake_gcs_folder
from flax import nnx
from tiny_run import TINY, params_to_numpy

from memarch.errors import UserError
from memarch.train import workdir as wd
from memarch.train.config import CheckpointConfig, OptimConfig, ProfileConfig
from memarch.train.profile import PROFILE_DIR, trace_files
from memarch.train.run_dir import load_run
from memarch.train.trainer import train


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    yield from fake_gcs_folder(tmp_path, monkeypatch)


def _cfg(num_steps: int, profile: ProfileConfig | None = None):
    return dataclasses.replace(
        TINY,
        num_steps=num_steps,
        profile=profile or ProfileConfig(),
        log_every=1,
        tensorboard=True,
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=2, schedule="constant"),
        checkpoint=CheckpointConfig(every=2, keep=2),
    )


def _stray_url_folders() -> list[Path]:
    """Folders named like a URL scheme (``gs:``) where a path mistaken for local lands."""
    places = [Path.cwd(), Path(tempfile.gettempdir()), Path(__file__).resolve().parents[2]]
    return [p / "gs:" for p in places if (p / "gs:").exists()]


def test_gs_workdir_trains_resumes_and_loads_without_local_files(fake_gcs):
    root, cwd = fake_gcs
    url = f"gs://{BUCKET}/runs/tiny"
    first = train(
        _cfg(4, ProfileConfig(start_step=1, num_steps=1)), workdir=url, log=lambda s: None
    )
    assert str(first.run_dir) == url
    run = root / BUCKET / "runs" / "tiny"
    files = local_files(run)
    assert "config.json" in files and "metrics.jsonl" in files
    assert any(f.startswith("tensorboard/events.out.tfevents.") for f in files), files
    assert any(f.startswith("params/") for f in files), files
    # orbax's commit markers for gs:// (no renames): both kept checkpoints are complete
    assert {"checkpoints/2/commit_success.txt", "checkpoints/4/commit_success.txt"} <= set(files)
    assert local_files(cwd) == [] and not _stray_url_folders()
    (trace,) = trace_files(epath.Path(url) / PROFILE_DIR)  # written locally, copied to the URL
    assert str(trace).startswith(f"{url}/profile/plugins/profile/")
    planes = jax.profiler.ProfileData.from_serialized_xspace(trace.read_bytes()).planes
    assert "/host:CPU" in [p.name for p in planes]
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
    ]

    resumed = train(
        _cfg(6), workdir=url, resume=True, allow_schedule_change=True, log=lambda s: None
    )
    assert resumed.resumed_from == 4 and resumed.final_step == 6
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the object kept its earlier rows
    assert sorted(os.listdir(run / "checkpoints")) == ["4", "6"]  # keep=2 rotated on gs://
    assert local_files(cwd) == [] and not _stray_url_folders()

    # TensorBoard reads the events written through epath (both runs' files)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events in sorted((run / "tensorboard").iterdir()):
        acc = EventAccumulator(str(events))
        acc.Reload()
        steps += [e.step for e in acc.Scalars("loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]

    # resume is exact: the same parameters as 6 straight steps in a local folder
    straight = train(_cfg(6), workdir=str(cwd / "local"), log=lambda s: None)
    got = params_to_numpy(nnx.state(resumed.model, nnx.Param))
    want = params_to_numpy(nnx.state(straight.model, nnx.Param))
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)

    cfg, model = load_run(url)
    assert cfg.num_steps == 6
    loaded = params_to_numpy(nnx.state(model, nnx.Param))
    for k in want:
        np.testing.assert_array_equal(loaded[k], want[k], err_msg=k)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("gs://b/run", "gs://b/run"), ("s3://b/x/y", "s3://b/x/y"), ("az://c/d", "az://c/d")],
)
def test_as_path_keeps_urls(given, expected):
    path = wd.as_path(given)
    assert str(path) == expected and str(path / "config.json") == f"{expected}/config.json"
    assert wd.is_url(path)


def test_as_path_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(wd.as_path("runs/a")) == str(tmp_path / "runs" / "a")
    assert not wd.is_url(wd.as_path("runs/a"))


@pytest.mark.parametrize("url", ["memory://x/run", "ftp://host/run", "http://h/p"])
def test_as_path_refuses_schemes_epath_cannot_reach(url):
    with pytest.raises(UserError, match=r"URL scheme .* is not supported.*gs://"):
        wd.as_path(url)


def test_object_appender_keeps_earlier_bytes(fake_gcs):
    url = f"gs://{BUCKET}/log.txt"
    with wd.open_append(url) as f:
        f.write("a\n")
    with wd.open_append(url) as f:
        f.write("b\n")
        f.flush()
        assert epath.Path(url).read_text() == "a\nb\n"  # visible after flush, before close
    assert (fake_gcs[0] / BUCKET / "log.txt").read_text() == "a\nb\n"


def test_write_file_into_a_url_workdir(fake_gcs):
    path = wd.write_file(f"gs://{BUCKET}/run", "compile/report.json", '{"ok": 1}')
    assert str(path) == f"gs://{BUCKET}/run/compile/report.json"
    assert (fake_gcs[0] / BUCKET / "run" / "compile" / "report.json").read_text() == '{"ok": 1}'
    assert local_files(fake_gcs[1]) == []
