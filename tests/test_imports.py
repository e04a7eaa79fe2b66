"""Import structure of the package.

* Every subpackage imports on its own, first, in a fresh interpreter (no import cycles).
* One direction of dependencies: a module of rank ``r`` imports only modules of rank ``≤ r``
  (``RANKS``; checked on the AST of every file in ``memarch/`` and ``kernels/``, imports
  inside function bodies included, so a lazy import cannot hide an upward dependency).
* No function-local import of the package's own modules (the old way of dodging a cycle),
  unless a comment on its line or the line above says why it is lazy (an optional heavy
  third-party dependency behind it).
"""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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
    "memarch.ablate",
    "memarch.compile",
    "memarch.convert",
    "memarch.cli",
    "memarch.demo",
    "memarch.kernels",
]

# memarch.<name> -> rank; a module may import only modules of its rank or lower. Names not
# listed (the package root, memarch.registry, …) are rank 0.
RANKS = {
    "errors": 0,  # user-error classes: importable by every layer
    "testing": 0,
    "kernels": 0,
    "ops": 1,
    "layers": 2,
    "data": 2,
    "memory": 3,
    "kvcache": 3,
    "mixers": 4,
    "models": 5,
    "train": 6,
    "eval": 7,
    "compile": 7,  # ahead-of-time compilation for TPU topologies (memarch compile)
    "convert": 7,  # fla (Hugging Face) checkpoints <-> memarch run directories (memarch convert)
    "ablate": 8,
    "demo": 8,
    "cli": 9,
}


@dataclasses.dataclass(frozen=True)
class Violation:
    path: str
    line: int
    kind: str  # "upward" or "local"
    message: str


def module_name(path: Path) -> str:
    """``memarch/train/trainer.py`` -> ``memarch.train.trainer``; ``kernels/gla.py`` ->
    ``memarch.kernels.gla`` (installed there); ``__init__.py`` names its package."""
    parts = list(path.with_suffix("").parts)
    if parts[0] == "kernels":
        parts = ["memarch", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def rank(module: str) -> int:
    """The rank of ``memarch.<name>…`` (0 for names not in ``RANKS``)."""
    parts = module.split(".")
    return RANKS.get(parts[1], 0) if len(parts) > 1 else 0


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The first-party modules an import node loads (absolute names; empty for third-party)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base]) if base else ".".join(package)
        # `from memarch import train`: the names are subpackages
        names = [f"{base}.{a.name}" for a in node.names] if base == "memarch" else [base]
    return [n for n in names if n == "memarch" or n.startswith("memarch.")]


def _function_local(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside a function body (at any depth)."""
    inside = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    inside.add(id(node))
    return inside


def _has_comment(lines: list[str], lineno: int) -> bool:
    here = lines[lineno - 1]
    above = lines[lineno - 2].strip() if lineno >= 2 else ""
    return "#" in here or above.startswith("#")


def check_source(path: Path, source: str) -> list[Violation]:
    """Every upward import (anywhere in the file) and every uncommented function-local import
    of a first-party module in ``source``, the text of the file at ``path`` (relative to the
    repository root: ``memarch/…`` or ``kernels/…``)."""
    module = module_name(path)
    own = rank(module)
    tree = ast.parse(source, filename=str(path))
    local = _function_local(tree)
    lines = source.splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        targets = _targets(node, module, path.name == "__init__.py")
        for target in targets:
            if rank(target) > own:
                out.append(
                    Violation(
                        str(path),
                        node.lineno,
                        "upward",
                        f"{module} (rank {own}) imports {target} (rank {rank(target)})",
                    )
                )
        if targets and id(node) in local and not _has_comment(lines, node.lineno):
            out.append(
                Violation(
                    str(path),
                    node.lineno,
                    "local",
                    f"{module} imports {', '.join(targets)} inside a function (move it to the "
                    "top of the module, or say in a comment why it must be lazy)",
                )
            )
    return out


def package_files() -> list[Path]:
    files = sorted((ROOT / "memarch").rglob("*.py")) + sorted((ROOT / "kernels").rglob("*.py"))
    return [f.relative_to(ROOT) for f in files]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_imports_first(module):
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_import_points_down():
    files = package_files()
    assert len(files) > 50 and Path("memarch/train/trainer.py") in files
    found = [v for f in files for v in check_source(f, (ROOT / f).read_text())]
    assert not found, "\n".join(f"{v.path}:{v.line}: {v.kind}: {v.message}" for v in found)


def test_every_package_has_a_rank():
    packages = {p.name for p in (ROOT / "memarch").iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in (ROOT / "memarch").glob("*.py") if p.stem != "__init__"}
    assert packages - set(RANKS) == set()
    assert modules - set(RANKS) <= {"registry"}  # rank 0, imports nothing from memarch


def test_checker_reports_upward_and_local_imports():
    source = (
        "import numpy as np\n"
        "from memarch.train import trainer\n"
        "from memarch.ops import _checks\n"
        "\n"
        "def f():\n"
        "    from memarch.layers import norms\n"
        "    import memarch.eval.recall\n"
        "    from . import gla\n"
        "    from memarch.kernels import gla as kernel  # Pallas only when used\n"
        "    return np\n"
    )
    found = check_source(Path("memarch/ops/x.py"), source)
    got = sorted((v.line, v.kind) for v in found)
    assert got == [
        (2, "upward"),  # ops -> train
        (6, "local"),  # a lazy first-party import
        (6, "upward"),  # ops -> layers, inside a function
        (7, "local"),
        (7, "upward"),  # ops -> eval, inside a function
        (8, "local"),  # relative: memarch.ops, same rank, but lazy
    ]
    assert "memarch.ops.x (rank 1) imports memarch.train (rank 6)" in found[0].message


def test_checker_resolves_kernels_and_package_roots():
    # kernels/ is installed as memarch.kernels (rank 0): importing ops is upward
    kernel = check_source(Path("kernels/gla.py"), "from memarch.ops import _checks\n")
    assert [(v.kind, v.message) for v in kernel] == [
        ("upward", "memarch.kernels.gla (rank 0) imports memarch.ops (rank 1)")
    ]
    # `from memarch import train` names the subpackage; `from .. import x` is resolved
    root = check_source(Path("memarch/models/lm.py"), "from memarch import train, ops\n")
    assert [v.message for v in root] == [
        "memarch.models.lm (rank 5) imports memarch.train (rank 6)"
    ]
    rel = check_source(Path("memarch/layers/__init__.py"), "from ..mixers import attention\n")
    assert [v.message for v in rel] == ["memarch.layers (rank 2) imports memarch.mixers (rank 4)"]
    assert check_source(Path("memarch/cli.py"), "from memarch.train import trainer\n") == []
