"""Every notebook in notebooks/ runs top to bottom (a failing cell fails the test) and is
stored without outputs.

The notebooks run with nbclient on a kernel of this interpreter, in notebooks/, with
``MEMARCH_NOTEBOOK_FAST=1`` (each notebook shrinks its training runs) and this process's
``PYTHONPATH`` (with the repository root added), so they import the memarch under test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the dev extra (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the dev extra (nbclient)")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600  # per cell; a whole notebook takes well under a minute on 2 cores (fast)


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_prototype_a_gate.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.fixture
def kernel_env(monkeypatch, tmp_path):
    """The kernel inherits this environment: fast settings, the repo on PYTHONPATH, CPU,
    a private matplotlib config dir."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("MEMARCH_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, kernel_env):
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class _ThisInterpreter(KernelSpecManager):
        """Kernel spec ``python3`` on ``sys.executable`` (whatever kernels are installed)."""

        def get_kernel_spec(self, kernel_name):
            argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            return KernelSpec(argv=argv, display_name="memarch", language="python")

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        kernel_manager_class=_manager_class(_ThisInterpreter),
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell failed:\n{str(err)[-4000:]}")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "not every cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {[e.ename for e in errors]}"


def _manager_class(spec_manager):
    from jupyter_client.manager import KernelManager

    class _Manager(KernelManager):
        def __init__(self, **kwargs):
            kwargs["kernel_spec_manager"] = spec_manager()
            super().__init__(**kwargs)

    return _Manager
