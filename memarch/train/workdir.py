"""Run directories as local folders or object-store URLs (``gs://bucket/run``), through
``etils.epath`` — the path type orbax itself uses for checkpoints.

Every file a run writes (``config.json``, checkpoints, ``params/``, ``metrics.jsonl``,
TensorBoard events, profiler traces, evaluation outputs, compile reports) goes through
:func:`as_path`, so a ``--workdir gs://bucket/run`` reaches the bucket and no local folder
named ``gs:`` is ever made. ``epath`` routes ``gs://``, ``s3://``, ``az://`` (and read-only
``hf://``) to fsspec (``gcsfs``/``s3fs``/``adlfs``, or ``tf.io.gfile`` when TensorFlow is
installed); any other ``scheme://`` is refused with one clear error instead of being taken
for a local folder.

Object stores have no append and no atomic rename: :class:`ObjectAppender` keeps a file's
bytes in memory and rewrites the whole object on each flush (what append-only logs such as
``metrics.jsonl`` and TensorBoard event files need there); orbax switches by itself to
commit-marker checkpoints (``commit_success.txt``) on ``gs://``.
"""

from __future__ import annotations

import os
import re
from typing import IO

from etils import epath

from memarch.errors import UserError

# the URL schemes etils.epath handles (its fsspec / tf.io.gfile backends)
URL_SCHEMES = ("gs", "s3", "az", "hf")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

PathLike = str | os.PathLike


def url_scheme(path: PathLike) -> str | None:
    """``"gs"`` for ``gs://bucket/x`` (any ``scheme://`` prefix), ``None`` for a local path."""
    match = _SCHEME.match(os.fspath(path))
    return match.group(1).lower() if match else None


def is_url(path: PathLike) -> bool:
    """Whether ``path`` is an object-store URL (not a local path)."""
    return url_scheme(path) is not None


def as_path(path: PathLike) -> epath.Path:
    """``path`` as an ``epath.Path``: a URL stays a URL, a local path becomes absolute
    (orbax needs absolute local paths). ``UserError`` for a ``scheme://`` epath cannot
    reach (it would otherwise become a local folder named ``scheme:``).

    Never call ``.absolute()`` / ``.resolve()`` on an ``epath.Path`` URL yourself: both
    turn ``gs://b/x`` into ``<cwd>/gs:/b/x``."""
    text = os.fspath(path)
    scheme = url_scheme(text)
    if scheme is None:
        return epath.Path(text).expanduser().absolute()
    if scheme not in URL_SCHEMES:
        raise UserError(
            f"workdir {text!r}: URL scheme {scheme + '://'!r} is not supported; use a local "
            f"path or one of {[s + '://' for s in URL_SCHEMES]}"
        )
    return epath.Path(text)


def write_file(workdir: PathLike, name: str, data: str | bytes) -> epath.Path:
    """Writes ``data`` (text as UTF-8) to ``workdir/name`` (``name`` may hold ``/``), creating
    the folders a local path needs; returns the file's path. For any module that adds a file
    to a run directory (e.g. a compile report)."""
    path = as_path(workdir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def copy_tree(src: PathLike, dst: PathLike) -> list[epath.Path]:
    """Copies every file under folder ``src`` to the same relative place under ``dst`` (either
    may be a URL); returns the files written."""
    src, dst = as_path(src), as_path(dst)
    written = []
    for folder, _, names in src.walk():  # (epath has no recursive glob on object stores)
        relative = os.path.relpath(os.fspath(folder), os.fspath(src))
        for name in sorted(names):
            target = dst / relative / name if relative != "." else dst / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((as_path(folder) / name).read_bytes())
            written.append(target)
    return written


class ObjectAppender:
    """An append-mode file on an object store: starts from the object's current bytes (a
    resumed run keeps its earlier rows), appends in memory, and rewrites the whole object on
    :meth:`flush` and :meth:`close`. ``write`` takes bytes, or str (UTF-8) with ``text=True``.
    No ``fileno``: there is no local file to ``fsync``."""

    def __init__(self, path: PathLike, *, text: bool = False):
        self.path = as_path(path)
        self.text = text
        self.closed = False
        self._buffer = bytearray(self.path.read_bytes() if self.path.exists() else b"")
        self._dirty = True  # the object exists once opened, as a local append would make it

    def write(self, data: bytes | str) -> int:
        if self.closed:
            raise ValueError(f"write to closed {self.path}")
        raw = data.encode() if self.text else bytes(data)
        self._buffer += raw
        self._dirty = True
        return len(data)

    def flush(self) -> None:
        if self._dirty and not self.closed:
            self.path.write_bytes(bytes(self._buffer))
            self._dirty = False

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True

    def __enter__(self) -> ObjectAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_append(path: PathLike) -> IO[str] | ObjectAppender:
    """A text file opened for appending: the local file itself, or an :class:`ObjectAppender`
    for a URL."""
    path = as_path(path)
    if is_url(path):
        return ObjectAppender(path, text=True)
    return open(path, "a", encoding="utf-8")


__all__ = [
    "ObjectAppender",
    "URL_SCHEMES",
    "as_path",
    "copy_tree",
    "is_url",
    "open_append",
    "url_scheme",
    "write_file",
]
