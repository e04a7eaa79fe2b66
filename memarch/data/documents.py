"""Document sources for :mod:`memarch.data.prepare`: local corpora and local TFDS datasets.

A source is split into *units*, the pieces one preparation worker reads: one local file, or a
range of records of a TFDS split. :func:`read_unit` yields ``(index, text)`` for the documents
of a unit, ``index`` being the document's position in its file (or its record number), which
with the unit's ``key`` names the document for the validation split rule.

Local corpora (:class:`LocalCorpus`): glob patterns of

* ``.txt``: one document per file (``txt_mode="file"``) or per blank-line-separated paragraph
  (``txt_mode="paragraph"``; paragraphs that are only whitespace are dropped, the index counts
  the kept ones);
* ``.jsonl``: one JSON object per non-blank line, the document in ``text_field`` (index =
  line number from 0);
* ``.parquet``: the column ``text_field`` (index = row number).

A unit's ``key`` is its path relative to the pattern's directory part (the part before the
first glob character), so the split rule does not depend on where the corpus lives.

TFDS (:class:`TFDSCorpus`): a dataset prepared in a local ``data_dir`` (``name``,
``name/config`` or ``name/config:version``), one split, the text feature ``text_field``, read
with ``tfds.data_source`` (no TensorFlow). Unit key: ``"{name}/{split}"``.

Text must be UTF-8: with ``errors="strict"`` invalid bytes raise a ``ValueError`` naming the
file and the byte offset; with ``errors="replace"`` they become U+FFFD.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq

SUFFIXES = (".txt", ".jsonl", ".parquet")
TXT_MODES = ("file", "paragraph")
ERRORS = ("strict", "replace")
GLOB_CHARS = "*?["


@dataclasses.dataclass(frozen=True)
class Unit:
    """One piece of a source read by one worker: a file (``start``/``stop`` unused) or the
    TFDS records ``[start, stop)`` (``path`` = the dataset name). ``key`` names it in the split
    rule; ``size``: its bytes (a TFDS unit: its share of the dataset's files)."""

    kind: str  # "txt" | "jsonl" | "parquet" | "tfds"
    path: str
    key: str
    size: int
    start: int = 0
    stop: int = 0


def _decode(data: bytes, where: str, errors: str, base_offset: int = 0) -> str:
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{where}: invalid UTF-8 at byte offset {base_offset + e.start} "
            f"(set errors='replace' to replace invalid bytes with U+FFFD)"
        ) from None


def _static_dir(pattern: str) -> Path:
    """The directory part of a glob pattern before its first glob character."""
    cut = min((pattern.find(c) for c in GLOB_CHARS if c in pattern), default=len(pattern))
    head = pattern[:cut]
    if cut == len(pattern):
        return Path(pattern).parent
    return Path(head if head.endswith(os.sep) else os.path.dirname(head) or ".")


@dataclasses.dataclass(frozen=True)
class LocalCorpus:
    """Local ``.txt`` / ``.jsonl`` / ``.parquet`` files named by glob ``patterns`` (see the
    module docstring). Files are taken in sorted order; each file is a unit."""

    patterns: tuple[str, ...]
    text_field: str = "text"
    txt_mode: str = "file"
    errors: str = "strict"

    def __post_init__(self):
        if isinstance(self.patterns, str):
            object.__setattr__(self, "patterns", (self.patterns,))
        object.__setattr__(self, "patterns", tuple(str(p) for p in self.patterns))
        if not self.patterns:
            raise ValueError("corpus patterns must name at least one glob pattern")
        if self.txt_mode not in TXT_MODES:
            raise ValueError(f"txt_mode must be one of {list(TXT_MODES)}; got {self.txt_mode!r}")
        if self.errors not in ERRORS:
            raise ValueError(f"errors must be one of {list(ERRORS)}; got {self.errors!r}")
        if not self.text_field:
            raise ValueError("text_field must be a non-empty field name")

    def options(self) -> dict:
        """The options that change the documents (recorded in the index)."""
        return {
            "source": "local",
            "text_field": self.text_field,
            "txt_mode": self.txt_mode,
            "errors": self.errors,
        }

    def units(self) -> list[Unit]:
        """The matched files, sorted by key; ``ValueError`` when a pattern matches nothing or a
        file has another suffix."""
        found: dict[str, Unit] = {}
        for pattern in self.patterns:
            paths = sorted(glob.glob(pattern, recursive=True))
            paths = [p for p in paths if Path(p).is_file()]
            if not paths:
                raise ValueError(f"corpus pattern {pattern!r} matches no file")
            base = _static_dir(pattern)
            for p in paths:
                suffix = Path(p).suffix
                if suffix not in SUFFIXES:
                    raise ValueError(
                        f"corpus file {p!r} has suffix {suffix!r}; accepted: {list(SUFFIXES)}"
                    )
                key = os.path.relpath(p, base)
                if key in found and found[key].path != p:
                    raise ValueError(
                        f"corpus files {found[key].path!r} and {p!r} have the same key {key!r} "
                        "(their path below the pattern's directory); use one pattern for both"
                    )
                found[key] = Unit(suffix[1:], p, key, os.path.getsize(p))
        return [found[k] for k in sorted(found)]


def _tfds():
    """``tensorflow_datasets``, imported on first use: the import takes seconds, and the
    preparation workers of local corpora (spawned processes) never need it."""
    return importlib.import_module("tensorflow_datasets")


def _tfds_builder(name: str, data_dir: str):
    tfds = _tfds()
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError, bad config/version, …
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in data_dir {data_dir!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


@dataclasses.dataclass(frozen=True)
class TFDSCorpus:
    """The split ``split`` of TFDS dataset ``name`` prepared in ``data_dir``, documents in
    feature ``text_field``; units of ``records_per_unit`` records."""

    name: str
    data_dir: str
    split: str = "train"
    text_field: str = "text"
    errors: str = "strict"
    records_per_unit: int = 100_000

    def __post_init__(self):
        if self.errors not in ERRORS:
            raise ValueError(f"errors must be one of {list(ERRORS)}; got {self.errors!r}")
        if self.records_per_unit < 1:
            raise ValueError(f"records_per_unit must be >= 1; got {self.records_per_unit}")
        if not Path(self.data_dir).is_dir():
            raise ValueError(f"TFDS data_dir {self.data_dir!r} does not exist")

    def options(self) -> dict:
        return {
            "source": "tfds",
            "name": self.name,
            "split": self.split,
            "text_field": self.text_field,
            "errors": self.errors,
            "records_per_unit": self.records_per_unit,
        }

    def builder(self):
        """The TFDS builder; ``ValueError`` for an unknown dataset, split or feature."""
        builder = _tfds_builder(self.name, self.data_dir)
        features = list(builder.info.features.keys())
        if self.text_field not in features:
            raise ValueError(
                f"TFDS dataset {self.name!r} has no feature text_field={self.text_field!r}; "
                f"its features: {features}"
            )
        if self.split not in builder.info.splits:
            raise ValueError(
                f"TFDS dataset {self.name!r} has no split {self.split!r}; its splits: "
                f"{list(builder.info.splits.keys())}"
            )
        return builder

    def source(self):
        """The random-access data source of the split (``builder.as_data_source``, what
        ``tfds.data_source`` returns; ArrayRecord, no TensorFlow)."""
        return self.builder().as_data_source(split=self.split)

    def files(self) -> list[str]:
        """The dataset's files (its fingerprint covers them)."""
        root = Path(self.builder().data_dir)
        return sorted(str(p) for p in root.rglob("*") if p.is_file())

    def units(self) -> list[Unit]:
        n = len(self.source())
        key = f"{self.name}/{self.split}"
        total = sum(os.path.getsize(f) for f in self.files())
        step = self.records_per_unit
        return [
            Unit("tfds", self.name, key, total * (min(a + step, n) - a) // n, a, min(a + step, n))
            for a in range(0, n, step)
        ]


Corpus = LocalCorpus | TFDSCorpus


def _txt_documents(unit: Unit, corpus: LocalCorpus) -> Iterator[tuple[int, str]]:
    text = _decode(Path(unit.path).read_bytes(), unit.path, corpus.errors)
    if corpus.txt_mode == "file":
        yield 0, text
        return
    kept = (p for p in text.split("\n\n") if p.strip())
    yield from enumerate(kept)


def _jsonl_documents(unit: Unit, corpus: LocalCorpus) -> Iterator[tuple[int, str]]:
    offset = 0
    with open(unit.path, "rb") as f:
        for i, line in enumerate(f):
            where = f"{unit.path} line {i + 1}"
            text = _decode(line, unit.path, corpus.errors, offset)
            offset += len(line)
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not a JSON object ({e.msg})") from None
            if not isinstance(record, dict) or corpus.text_field not in record:
                keys = list(record) if isinstance(record, dict) else type(record).__name__
                raise ValueError(f"{where}: no text field {corpus.text_field!r} (fields: {keys})")
            value = record[corpus.text_field]
            if not isinstance(value, str):
                raise ValueError(
                    f"{where}: field {corpus.text_field!r} is {type(value).__name__}, not a string"
                )
            yield i, value


def _parquet_documents(unit: Unit, corpus: LocalCorpus) -> Iterator[tuple[int, str]]:
    schema = pq.read_schema(unit.path)
    if corpus.text_field not in schema.names:
        raise ValueError(
            f"{unit.path}: no text field {corpus.text_field!r} (columns: {schema.names})"
        )
    pfile = pq.ParquetFile(unit.path)
    i = 0
    for batch in pfile.iter_batches(columns=[corpus.text_field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            if isinstance(value, bytes):
                value = _decode(value, f"{unit.path} row {i}", corpus.errors)
            if value is None:
                value = ""
            yield i, value
            i += 1


def _tfds_documents(unit: Unit, corpus: TFDSCorpus) -> Iterator[tuple[int, str]]:
    source = corpus.source()
    for i in range(unit.start, unit.stop):
        value = source[i][corpus.text_field]
        if isinstance(value, bytes):
            value = _decode(value, f"TFDS {unit.key} record {i}", corpus.errors)
        yield i, str(value)


def read_unit(unit: Unit, corpus: Corpus) -> Iterator[tuple[int, str]]:
    """``(index, text)`` of each document of ``unit`` (see the module docstring)."""
    readers = {
        "txt": _txt_documents,
        "jsonl": _jsonl_documents,
        "parquet": _parquet_documents,
        "tfds": _tfds_documents,
    }
    return readers[unit.kind](unit, corpus)


def file_fingerprint(path: str) -> dict:
    """``{"path", "size", "mtime_ns", "sha256"}`` of a file (content hashed in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    st = os.stat(path)
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}


def unit_files(unit: Unit, corpus: Corpus) -> Sequence[str]:
    """The files whose content determines ``unit``'s documents."""
    return corpus.files() if isinstance(corpus, TFDSCorpus) else [unit.path]


__all__ = [
    "Corpus",
    "LocalCorpus",
    "TFDSCorpus",
    "Unit",
    "file_fingerprint",
    "read_unit",
    "unit_files",
]
