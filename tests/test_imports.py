"""Every subpackage imports on its own, first, in a fresh interpreter (no import cycles)."""

import subprocess
import sys

import pytest

ENTRY_POINTS = [
    "memarch.eval",
    "memarch.train",
    "memarch.data",
    "memarch.models",
    "memarch.mixers",
    "memarch.ops",
    "memarch.memory",
    "memarch.layers",
    "memarch.kvcache",
    "memarch.cli",
    "memarch.demo",
    "memarch.kernels",
]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_imports_first(module):
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
