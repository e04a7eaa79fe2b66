"""Local text files as a TFDS ArrayRecord dataset, read without TensorFlow, packed into
fixed-length training rows with ``segment_ids``.

:class:`LocalText` is a TFDS builder: documents are the blank-line-separated paragraphs of
the ``*.txt`` files in its manual directory; 5 % of them (every 20th) form the
``validation`` split. :func:`prepare` builds it once (offline; nothing is downloaded) and
returns random-access data sources through ``tfds.data_source``.

:class:`PackedText` turns a split into an index-addressable source of rows: the documents,
in a seeded permutation, are tokenized (:mod:`memarch.data.byte_tokenizer`, each starting with
BOS) and concatenated into one stream; row ``i`` is tokens ``[i·T, (i+1)·T + 1)`` of it,
so every token is used once per epoch and row ``i`` is a pure function of (seed, i).
``segment_ids`` number the documents within a row (1, 2, …); a target that would cross into
the next document is ``IGNORE_INDEX``.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from memarch.data.byte_tokenizer import encode
from memarch.data.mqar import IGNORE_INDEX


class LocalText(tfds.core.GeneratorBasedBuilder):
    """Paragraphs of local ``*.txt`` files (``{"text": bytes}``); splits train / validation."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the UTF-8 *.txt files in the manual directory."

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            description="Blank-line-separated paragraphs of local text files.",
        )

    def _split_generators(self, dl_manager):
        files = sorted(Path(dl_manager.manual_dir).glob("*.txt"))
        if not files:
            raise ValueError(f"no *.txt files in {dl_manager.manual_dir}")
        return {
            "train": self._generate_examples(files, keep=lambda i: i % 20 != 19),
            "validation": self._generate_examples(files, keep=lambda i: i % 20 == 19),
        }

    def _generate_examples(self, files, keep):
        for f in files:
            paragraphs = [p for p in f.read_text(encoding="utf-8").split("\n\n") if p.strip()]
            for i, p in enumerate(paragraphs):
                if keep(i):
                    yield f"{f.name}:{i}", {"text": p}


def default_data_dir() -> Path:
    """``$MEMARCH_DATA_DIR`` or ``~/.cache/memarch/tfds``."""
    return Path(os.environ.get("MEMARCH_DATA_DIR", Path.home() / ".cache/memarch/tfds"))


def prepare(text_file: str | Path, data_dir: str | Path | None = None) -> dict:
    """Builds :class:`LocalText` for one file (once; later calls reuse it) and returns
    ``{"train": source, "validation": source}`` (random access, ``{"text": bytes}``)."""
    text_file = Path(text_file).absolute()
    if not text_file.is_file():
        raise ValueError(f"data.text_file {str(text_file)!r} does not exist")
    root = Path(data_dir or default_data_dir()).absolute() / text_file.stem
    manual = root / "manual"
    manual.mkdir(parents=True, exist_ok=True)
    link = manual / text_file.name
    if not link.exists():
        link.symlink_to(text_file)
    builder = LocalText(data_dir=str(root / "tfds"), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    try:
        return dict(tfds.data_source("local_text", data_dir=str(root / "tfds")))
    except Exception:  # tensorflow/datasets#5665: data_source can miss local data
        return dict(builder.as_data_source())


class PackedText:
    """Random-access packed rows of one split: ``{"inputs", "targets", "segment_ids"}:
    int32[T]`` (see the module docstring)."""

    def __init__(self, source, *, seq_len: int, seed: int):
        if seq_len < 1:
            raise ValueError(f"data.seq_len must be >= 1; got {seq_len}")
        self.source = source
        self.seq_len = seq_len
        self.order = np.random.default_rng(seed).permutation(len(source))
        lengths = np.array([len(self._tokens(j)) for j in range(len(source))], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])  # stream offset of each doc
        self.num_rows = int((self.starts[-1] - 1) // seq_len)
        if self.num_rows < 1:
            raise ValueError(f"the text has fewer than seq_len + 1 = {seq_len + 1} tokens")

    def _tokens(self, j: int) -> np.ndarray:
        return encode(self.source[int(self.order[j])]["text"])

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = operator.index(index)
        if not 0 <= index < self.num_rows:
            raise IndexError(f"row index must be in [0, {self.num_rows}); got {index}")
        lo, hi = index * self.seq_len, (index + 1) * self.seq_len + 1
        j = int(np.searchsorted(self.starts, lo, side="right")) - 1
        tokens, segments, seg = [], [], 1
        pos = lo
        while pos < hi:
            doc = self._tokens(j)
            piece = doc[pos - self.starts[j] : hi - self.starts[j]]
            tokens.append(piece)
            segments.append(np.full(len(piece), seg, np.int32))
            pos += len(piece)
            j, seg = j + 1, seg + 1
        tokens, segments = np.concatenate(tokens), np.concatenate(segments)
        same = segments[1:] == segments[:-1]
        return {
            "inputs": tokens[:-1].astype(np.int32),
            "targets": np.where(same, tokens[1:], IGNORE_INDEX).astype(np.int32),
            "segment_ids": segments[:-1],
        }


__all__ = ["LocalText", "PackedText", "default_data_dir", "prepare"]
