"""The on-disk format of prepared language-model data (written by :mod:`memarch.data.prepare`,
read by :mod:`memarch.data.packing`).

A prepared directory holds, for shard ``k`` of ``K`` (``NAME = f"{k:05d}-of-{K:05d}"``):

* ``train-NAME.array_record`` / ``validation-NAME.array_record``: ArrayRecord files, one
  record per document = its token ids as raw little-endian ``dtype`` bytes (``uint16`` when
  the vocabulary has at most 65,536 ids, else ``uint32``), written with
  ``group_size:1,uncompressed`` so a record is read alone, with nothing to decompress (random
  reads ~2× faster than zstd);
* ``train-NAME.lengths.npy`` / ``validation-NAME.lengths.npy``: ``int64[documents]``, the
  token count of each record (what the loader's start-up reads instead of the records);
* ``shard-NAME.json``: the shard's manifest (its inputs' digest and its outputs' counts),
  written last, so its presence means the shard is complete;
* ``index.json``: the whole preparation (format, tokenizer, dtype, options, split rule, source
  fingerprints, the shard manifests, per-split totals), written after every shard is
  complete. No timestamps: same inputs → byte-identical files.

Each split's counts are ``documents``, ``tokens`` and ``text_bytes`` (the UTF-8 bytes of the
documents' text, which bits per byte divides by).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

FORMAT = "memarch.prepared_shards/2"  # /2: per-split text_bytes
INDEX_NAME = "index.json"
SPLITS = ("train", "validation")
WRITER_OPTIONS = "group_size:1,uncompressed"
READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"
TMP_SUFFIX = ".tmp"


def token_dtype(vocab_size: int) -> str:
    """``"uint16"`` when ids fit (vocab ≤ 65,536), else ``"uint32"``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1; got {vocab_size}")
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def shard_name(k: int, num_shards: int) -> str:
    """``"00003-of-00012"``."""
    return f"{k:05d}-of-{num_shards:05d}"


def records_file(split: str, name: str) -> str:
    return f"{split}-{name}.array_record"


def lengths_file(split: str, name: str) -> str:
    return f"{split}-{name}.lengths.npy"


def manifest_file(name: str) -> str:
    return f"shard-{name}.json"


def dump_json(obj) -> bytes:
    """Canonical JSON bytes (sorted keys, 1-space indent, trailing newline)."""
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``path`` through a temporary name and a rename (never half-written)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SplitWriter:
    """Writes the documents of one split of one shard: ``add(ids)`` per document, then
    ``finish()`` renames the temporary files into place and returns
    ``{"documents", "tokens", "text_bytes", "records", "lengths", "bytes"}``."""

    def __init__(self, directory: Path, split: str, name: str, dtype: str):
        self.directory = Path(directory)
        self.dtype = np.dtype(dtype)
        self.records = records_file(split, name)
        self.lengths_name = lengths_file(split, name)
        self._tmp = self.directory / (self.records + TMP_SUFFIX)
        self._writer = ArrayRecordWriter(str(self._tmp), WRITER_OPTIONS)
        self._lengths: list[int] = []
        self._text_bytes = 0

    def add(self, ids, text_bytes: int) -> None:
        """Appends one document (a sequence of ids < 2**bits of ``dtype``) whose text is
        ``text_bytes`` UTF-8 bytes long."""
        arr = np.asarray(ids, dtype=self.dtype)
        self._writer.write(arr.astype(self.dtype.newbyteorder("<"), copy=False).tobytes())
        self._lengths.append(len(arr))
        self._text_bytes += int(text_bytes)

    def finish(self) -> dict:
        self._writer.close()
        lengths = np.asarray(self._lengths, np.int64)
        tmp_len = self.directory / (self.lengths_name + TMP_SUFFIX)
        with open(tmp_len, "wb") as f:
            np.save(f, lengths)
        os.replace(tmp_len, self.directory / self.lengths_name)
        os.replace(self._tmp, self.directory / self.records)
        return {
            "documents": len(lengths),
            "tokens": int(lengths.sum()),
            "text_bytes": self._text_bytes,
            "records": self.records,
            "lengths": self.lengths_name,
            "bytes": (self.directory / self.records).stat().st_size,
        }


def write_index(
    directory: str | Path,
    *,
    tokenizer: dict,
    dtype: str,
    options: dict,
    split_rule: str,
    sources: list[dict],
    shards: list[dict],
) -> dict:
    """Writes ``index.json`` (atomically) from the shard manifests and returns it. ``tokenizer``:
    :meth:`~memarch.data.tokenizers.TextTokenizer.info`; ``sources``: file fingerprints;
    per-split totals (``documents``, ``tokens``) and ``empty_documents`` are summed here."""
    index = {
        "format": FORMAT,
        "tokenizer": tokenizer,
        "dtype": dtype,
        "options": options,
        "split_rule": split_rule,
        "sources": sources,
        "shards": shards,
        "splits": {
            s: {k: sum(m[s][k] for m in shards) for k in ("documents", "tokens", "text_bytes")}
            for s in SPLITS
        },
        "empty_documents": sum(m.get("empty_documents", 0) for m in shards),
    }
    write_atomic(Path(directory) / INDEX_NAME, dump_json(index))
    return index


def read_index(directory: str | Path) -> dict:
    """The ``index.json`` of a prepared directory; ``ValueError`` when absent or of another
    format."""
    path = Path(directory) / INDEX_NAME
    if not path.is_file():
        raise ValueError(
            f"{str(directory)!r} holds no prepared data ({INDEX_NAME} missing; run "
            "`memarch data prepare` first, or let it finish)"
        )
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r}; expected {FORMAT!r}")
    return index


class RecordReader:
    """Random access to the documents of one ArrayRecord file (opened on first use, so
    start-up and pickling — grain worker processes — cost nothing)."""

    def __init__(self, path: Path, dtype: str):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self._reader: ArrayRecordReader | None = None

    def __getstate__(self):
        return {"path": self.path, "dtype": self.dtype, "_reader": None}

    def read(self, record: int) -> np.ndarray:
        """The ids of document ``record`` (``dtype[n]``)."""
        if self._reader is None:
            self._reader = ArrayRecordReader(str(self.path), READER_OPTIONS)
        (data,) = self._reader.read(record, record + 1)  # a range read: ~4x faster than [i]
        return np.frombuffer(data, dtype=self.dtype)


__all__ = [
    "FORMAT",
    "INDEX_NAME",
    "SPLITS",
    "RecordReader",
    "SplitWriter",
    "dump_json",
    "lengths_file",
    "manifest_file",
    "read_index",
    "records_file",
    "shard_name",
    "token_dtype",
    "write_atomic",
    "write_index",
]
