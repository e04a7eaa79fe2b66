"""A local folder standing in for Google Cloud Storage, for tests of ``gs://`` run directories
(offline). Use :func:`fake_gcs` from a pytest fixture.

A run reaches the store at two places, both redirected here: ``etils.epath``'s fsspec backend
(every file written through ``epath``, orbax's metadata and commit markers included) gets an
fsspec filesystem for the ``gs``/``gcs`` protocol that maps ``gs://bucket/x`` to
``<root>/bucket/x``; orbax's TensorStore kvstore spec for a ``gs://`` path (the array data)
becomes a ``file`` spec at the same place, and its hierarchical-namespace probe (a Cloud Storage
API call) answers "no". Everything else — orbax's commit-marker atomicity for ``gs://``,
tensorboardX's writer factories, memarch's path handling — runs as against a real bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from etils import epath
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import _registry as fsspec_registry
from orbax.checkpoint._src.path import gcs_utils

BUCKET = "memarch-test-bucket"


def _buckets_in(root: Path) -> type:
    class BucketsInFolder(DirFileSystem):
        """``gs://bucket/x`` ↔ ``<root>/bucket/x``."""

        protocol = ("gs", "gcs")
        cachable = False

        def __init__(self, *args, **kwargs):  # epath passes finalize_on_close=True
            super().__init__(path=str(root), fs=LocalFileSystem(auto_mkdir=True))

        def _join(self, path):
            if isinstance(path, str):
                return super()._join(path.removeprefix("gs://").removeprefix("gcs://"))
            return [self._join(p) for p in path]

    return BucketsInFolder


def fake_gcs(tmp_path: Path, monkeypatch) -> Iterator[tuple[Path, Path]]:
    """Yields ``(root, cwd)``: the folder holding bucket :data:`BUCKET`, and an empty current
    directory (to check that nothing is written locally)."""
    root, cwd = tmp_path / "gcs", tmp_path / "cwd"
    (root / BUCKET).mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for protocol in ("gcs", "gs"):
        monkeypatch.setitem(fsspec_registry, protocol, _buckets_in(root))
    fsspec_backend = epath.backend.fsspec_backend
    fsspec_backend._get_filesystem.cache_clear()  # epath caches the filesystem per protocol

    def kvstore(path: str) -> dict:
        bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
        return {"driver": "file", "path": str(root / bucket / key)}

    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", kvstore)
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    yield root, cwd
    fsspec_backend._get_filesystem.cache_clear()


def local_files(folder: Path) -> list[str]:
    """The files under ``folder``, relative to it, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
