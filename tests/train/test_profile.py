"""``profile.start_step`` / ``profile.num_steps``: a jax.profiler trace of the chosen training
steps in ``<workdir>/profile``, which XProf (TensorBoard's Profile tab) opens."""

from __future__ import annotations

import dataclasses
import json

import jax
import pytest
from tiny_run import TINY

from memarch.errors import ConfigError
from memarch.train.config import ProfileConfig
from memarch.train.profile import PROFILE_DIR, trace_files
from memarch.train.trainer import train
from memarch.train.validation import validate


def _cfg(**profile):
    return dataclasses.replace(TINY, num_steps=3, log_every=0, profile=ProfileConfig(**profile))


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("profiled")
    train(_cfg(start_step=1, num_steps=1), workdir=str(work), log=lambda s: None)
    return work


def test_trace_is_written_where_tensorboard_looks(traced_run):
    files = trace_files(traced_run / PROFILE_DIR)
    assert len(files) == 1, files  # <workdir>/profile/plugins/profile/<run>/<host>.xplane.pb
    assert len(files[0].read_bytes()) > 0


def test_xprof_opens_the_trace_with_the_traced_step(traced_run):
    """The converter TensorBoard's Profile tab runs (xprof) reads the trace; its trace-viewer
    events include the compiled training step's execution."""
    from xprof.convert.raw_to_tool_data import xspace_to_tool_data

    files = [str(f) for f in trace_files(traced_run / PROFILE_DIR)]
    data, content_type = xspace_to_tool_data(files, "trace_viewer@", {})
    assert content_type == "application/json"
    names = {e.get("name", "") for e in json.loads(data)["traceEvents"]}
    step_events = [n for n in names if "train_step" in n]
    assert step_events, sorted(names)[:50]


def test_jax_profile_data_reads_the_trace(traced_run):
    (path,) = trace_files(traced_run / PROFILE_DIR)
    planes = {p.name: p for p in jax.profiler.ProfileData.from_file(str(path)).planes}
    host = planes["/host:CPU"]
    assert sum(1 for line in host.lines for _ in line.events) > 0


@pytest.mark.parametrize(
    ("profile", "match"),
    [
        ({"start_step": -1, "num_steps": 1}, r"profile\.start_step must be an int >= 0"),
        ({"num_steps": -2}, r"profile\.num_steps must be an int >= 0"),
        ({"num_steps": 1.5}, r"profile\.num_steps must be an int >= 0"),
        ({"start_step": 2, "num_steps": 2}, r"traced steps \[2, 4\) must lie within .* \(3\)"),
    ],
)
def test_bad_profile_fields_are_refused(profile, match):
    with pytest.raises(ConfigError, match=match):
        validate(_cfg(**profile), 1)


def test_profile_without_workdir_is_refused():
    with pytest.raises(ConfigError, match="profile.num_steps > 0 needs a workdir"):
        train(_cfg(start_step=0, num_steps=1), workdir=None, log=lambda s: None)
