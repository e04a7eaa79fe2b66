"""Capturing what XLA logs from C++ while it compiles.

XLA's warnings (e.g. the SPMD partitioner's "Involuntary full rematerialization", emitted when
it cannot reshard an array cheaply and replicates it whole) are written by C++ logging, past
Python's ``sys.stderr``: by the CPU/GPU compilers to file descriptor 2, by libtpu's compiler
to its own log files (``$TPU_LOG_DIR``, default ``/tmp/tpu_logs``:
``<program>.<host>.<user>.log.WARNING.<date>-<time>.<pid>``) unless
``TPU_STDERR_LOG_LEVEL`` sends them to stderr. :func:`capture_logs` reads both for the duration
of a block: it redirects the descriptor itself into a temporary file and reads what the
process's libtpu warning logs grew by.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# what a line of XLA's log must contain to be reported as a sharding warning (lower case)
WARNING_MARKERS = ("rematerialization", "resharding", "sharding")


class Captured:
    """The text written to the descriptor while the block ran (``text``, after the block)."""

    text: str = ""


@contextlib.contextmanager
def capture_fd(fd: int = 2, *, echo: bool = False) -> Iterator[Captured]:
    """Redirects descriptor ``fd`` (default: stderr) into a temporary file inside the block;
    ``captured.text`` holds what was written. ``echo=True`` writes it back to ``fd`` after."""
    out = Captured()
    try:
        sys.stderr.flush()
    except Exception:  # a replaced sys.stderr without flush: nothing buffered to lose
        pass
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield out
        finally:
            try:
                sys.stderr.flush()
            except Exception:  # as above
                pass
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            out.text = tmp.read().decode("utf-8", errors="replace")
            if echo and out.text:
                os.write(fd, out.text.encode())


def tpu_log_files() -> list[str]:
    """libtpu's warning-level log files of this process (see the module docstring)."""
    directory = os.environ.get("TPU_LOG_DIR", "/tmp/tpu_logs")
    return sorted(glob.glob(os.path.join(directory, f"*.log.WARNING.*.{os.getpid()}")))


@contextlib.contextmanager
def capture_logs() -> Iterator[Captured]:
    """What C++ logging wrote while the block ran: descriptor 2 (:func:`capture_fd`), then
    the lines appended to this process's libtpu warning logs (:func:`tpu_log_files`)."""
    before = {path: os.path.getsize(path) for path in tpu_log_files()}
    out = Captured()
    with capture_fd() as fd_text:
        try:
            yield out
        finally:
            pass
    grown = []
    for path in tpu_log_files():
        with open(path, "rb") as f:
            f.seek(before.get(path, 0))
            grown.append(f.read().decode("utf-8", errors="replace"))
    out.text = fd_text.text + "".join(grown)


_HLO_NUMBER = re.compile(r"%([\w-]+)\.\d+")
_LOG_PREFIX = re.compile(r"^[EWIF]\d{4} [\d:.]+\s+\d+\s+[\w./-]+:\d+\]\s*")


def sharding_warnings(log: str) -> list[str]:
    """The lines of XLA's log that warn about sharding (see :data:`WARNING_MARKERS`), without
    the glog prefix (``W0000 00:00:… file.cc:123]``) and the partitioner's closing advice
    ("As the last resort, …"), in order of first appearance; warnings that differ only in the
    number of an HLO instruction (``%add_any.12066``) are given once, with ``(×n)``."""
    counts: dict[str, int] = {}
    for line in log.splitlines():
        text = _LOG_PREFIX.sub("", line.strip())
        if not text or not any(m in text.lower() for m in WARNING_MARKERS):
            continue
        text = text.split(". As the last resort", 1)[0]
        text = _HLO_NUMBER.sub(r"%\1", text)
        counts[text] = counts.get(text, 0) + 1
    return [t if n == 1 else f"{t} (×{n})" for t, n in counts.items()]


__all__ = [
    "Captured",
    "WARNING_MARKERS",
    "capture_fd",
    "capture_logs",
    "sharding_warnings",
    "tpu_log_files",
]
