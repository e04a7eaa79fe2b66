"""File-descriptor capture of C++ logging, and picking XLA's sharding warnings out of it."""

# ruff: noqa: E501 (log and HLO text quoted verbatim)

import os

from memarch.compile.capture import capture_fd, capture_logs, sharding_warnings, tpu_log_files

LOG = """\
W0000 00:00:1796518076.342554    5116 spmd_partitioner.cc:630] Involuntary full rematerialization. The compiler was not able to go from sharding {devices=[2,1,2]<=[4] last_tile_dim_replicate} to {devices=[1,2,2]<=[4]} without doing a full rematerialization of the tensor for HLO operation: %reshape.12
I0000 00:00:1796518076.4    5116 service.cc:10] XLA service initialised
W0000 00:00:1796518076.342554    5116 spmd_partitioner.cc:630] Involuntary full rematerialization. The compiler was not able to go from sharding {devices=[2,1,2]<=[4] last_tile_dim_replicate} to {devices=[1,2,2]<=[4]} without doing a full rematerialization of the tensor for HLO operation: %reshape
"""


def test_captures_what_is_written_to_the_descriptor():
    with capture_fd() as log:
        os.write(2, b"from C++: hello\n")
    assert log.text == "from C++: hello\n"
    with capture_fd() as empty:
        pass
    assert empty.text == ""


def test_sharding_warnings_are_named_once_with_their_count_without_the_log_prefix():
    got = sharding_warnings(LOG)
    assert len(got) == 1 and got[0].startswith("Involuntary full rematerialization.")
    assert got[0].endswith("for HLO operation: %reshape (×2)")
    assert sharding_warnings("I0000 00:00:1.0 1 service.cc:10] XLA service initialised") == []


def test_reads_what_this_process_logged_to_its_libtpu_warning_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TPU_LOG_DIR", str(tmp_path))
    log = tmp_path / f"tpu_driver.host.user.log.WARNING.20261206-000000.{os.getpid()}"
    other = tmp_path / "tpu_driver.host.user.log.WARNING.20261206-000000.1"  # another process
    log.write_text("W1206 old line\n")
    other.write_text("")
    with capture_logs() as got:
        with open(log, "a") as f:
            f.write(LOG.splitlines()[0] + "\n")
        other.write_text("W1206 not ours\n")
    assert got.text == LOG.splitlines()[0] + "\n"
    assert tpu_log_files() == [str(log)]
