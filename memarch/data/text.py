"""Task ``text``: language-model rows from prepared shards, as the trainer and evaluation use them.

The data section names a tokenizer (``data.tokenizer``: ``"byte"`` or a path, with
``data.bos_id`` / ``data.eos_id`` overriding its special ids) and the prepared corpus, either

* ``data.text_dir``: a directory written by ``memarch data prepare`` (pods: prepare once, point
  every host at it; start-up reads only its index and document lengths), or
* ``data.text_file``: local text files (a path or a glob of ``.txt`` / ``.jsonl`` /
  ``.parquet``; ``data.text_field`` for the latter two), prepared on first use into
  ``data_dir/prepared/<key>`` with ``data.text_val_every`` as the validation rule. The key
  covers the files' absolute pattern, the tokenizer's fingerprint and the options, and
  :func:`memarch.data.prepare.prepare` re-checks every file's content on each start, so a
  changed file is rebuilt, never served stale (one host; a pod uses ``text_dir``).

Training rows are :class:`~memarch.data.packing.PackedRows` over the ``train`` split seeded by
``data.seed`` (every token once per epoch, a new document order each epoch, BOS before each
document when ``data.add_bos``, EOS after it when ``data.add_eos``); element ``i`` of
:func:`train_rows` is a pure function of (seed, i). Evaluation reads the first
``data.num_eval_examples`` rows of the ``validation`` split's epoch 0, seeded by
``data.eval_seed`` (:func:`eval_rows`).

Vocabulary: ``data.vocab_size`` must equal the tokenizer's id count; the model's embedding may
be larger (:func:`~memarch.data.tokenizers.padded_vocab_size` rounds up to a multiple of 128),
and the loss and every evaluation never predict the padding ids (``data.vocab_size`` and up).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from pathlib import Path

from memarch.data.config import DataConfig
from memarch.data.documents import LocalCorpus
from memarch.data.packing import PackedRows, PreparedSplit
from memarch.data.prepare import prepare
from memarch.data.shards import read_index
from memarch.data.tokenizers import FROM_FILES, TextTokenizer, check_vocab, load_tokenizer


def default_data_dir() -> Path:
    """``$MEMARCH_DATA_DIR`` or ``~/.cache/memarch``."""
    return Path(os.environ.get("MEMARCH_DATA_DIR", Path.home() / ".cache" / "memarch"))


def text_tokenizer(cfg: DataConfig) -> TextTokenizer:
    """The tokenizer ``cfg`` names (``ValueError`` naming ``data.tokenizer`` when it is not a
    tokenizer)."""
    specials = {
        "bos_id": FROM_FILES if cfg.bos_id is None else cfg.bos_id,
        "eos_id": FROM_FILES if cfg.eos_id is None else cfg.eos_id,
    }
    try:
        return load_tokenizer(cfg.tokenizer, **specials)
    except ValueError as e:
        raise ValueError(f"data.tokenizer: {e}") from None


def _sources(cfg: DataConfig) -> None:
    if bool(cfg.text_dir) == bool(cfg.text_file):
        raise ValueError(
            "task 'text' needs exactly one of data.text_dir (a directory written by `memarch "
            "data prepare`) and data.text_file (local text files, prepared on first use); got "
            f"text_dir={cfg.text_dir!r}, text_file={cfg.text_file!r}"
        )


def local_corpus(cfg: DataConfig) -> LocalCorpus:
    """``data.text_file`` as a :class:`~memarch.data.documents.LocalCorpus` (absolute pattern;
    ``ValueError`` when it matches no file)."""
    corpus = LocalCorpus(
        patterns=(str(Path(cfg.text_file).expanduser().absolute()),),
        text_field=cfg.text_field,
        txt_mode="paragraph",
    )
    corpus.units()  # no file matched, or an unsupported suffix: a ValueError naming it
    return corpus


def cache_dir(cfg: DataConfig, tokenizer: TextTokenizer) -> Path:
    """Where ``data.text_file`` is prepared: ``data_dir/prepared/<name>-<key>``, the key being a
    digest of the corpus options, the tokenizer fingerprint and ``text_val_every``."""
    corpus = local_corpus(cfg)
    key = json.dumps(
        [corpus.patterns, corpus.options(), tokenizer.fingerprint, cfg.text_val_every],
        sort_keys=True,
    ).encode()
    root = Path(cfg.data_dir).expanduser() if cfg.data_dir else default_data_dir()
    stem = Path(cfg.text_file).stem.replace("*", "_") or "corpus"
    return root / "prepared" / f"{stem}-{hashlib.sha256(key).hexdigest()[:16]}"


def prepared_dir(cfg: DataConfig, tokenizer: TextTokenizer | None = None) -> Path:
    """The prepared directory of ``cfg``: ``data.text_dir``, or ``data.text_file`` prepared
    (or brought up to date) in :func:`cache_dir`."""
    _sources(cfg)
    if cfg.text_dir:
        return Path(cfg.text_dir).expanduser()
    tokenizer = tokenizer or text_tokenizer(cfg)
    stats = tuple((u.path, u.size, os.stat(u.path).st_mtime_ns) for u in local_corpus(cfg).units())
    return _prepare_text_file(cfg, tokenizer.fingerprint, stats)


@functools.lru_cache(maxsize=8)
def _prepare_text_file(cfg: DataConfig, fingerprint: str, stats: tuple) -> Path:
    """Prepares ``data.text_file`` once per process for the same files (path, size and
    modification time in ``stats``); :func:`~memarch.data.prepare.prepare` itself re-checks the
    content of every file, so a file changed between runs is rebuilt."""
    tokenizer = text_tokenizer(cfg)
    out = cache_dir(cfg, tokenizer)
    prepare(local_corpus(cfg), out, tokenizer, val_every=cfg.text_val_every, progress=False)
    return out


def text_split(cfg: DataConfig, split: str) -> PreparedSplit:
    """Split ``split`` of the prepared corpus, checked against ``cfg``'s tokenizer (shards
    written with another one are refused)."""
    tokenizer = text_tokenizer(cfg)
    return PreparedSplit(prepared_dir(cfg, tokenizer), split, tokenizer=tokenizer)


def packed_rows(cfg: DataConfig, split: str, seed: int) -> PackedRows:
    """The packed rows of ``split`` (``{"inputs", "targets", "segment_ids"}: int32[seq_len]``)."""
    return PackedRows(
        text_split(cfg, split),
        seq_len=cfg.seq_len,
        seed=seed,
        add_bos=cfg.add_bos,
        add_eos=cfg.add_eos,
    )


class EndlessRows:
    """The training rows of every epoch as one random-access source (``len`` = ``sys.maxsize``):
    element ``i`` is row ``i % R`` of epoch ``i // R`` (each epoch its own document order)."""

    def __init__(self, rows: PackedRows):
        self.rows = rows

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, index: int):
        return self.rows[index]


def train_rows(cfg: DataConfig) -> EndlessRows:
    """Training rows over the ``train`` split, seeded by ``data.seed``."""
    return EndlessRows(packed_rows(cfg, "train", cfg.seed))


def eval_rows(cfg: DataConfig) -> tuple[PackedRows, int]:
    """``(rows, n)``: the ``validation`` split's rows seeded by ``data.eval_seed`` and how many
    of them an evaluation scores (``min(num_eval_examples, rows per epoch)``)."""
    rows = packed_rows(cfg, "validation", cfg.eval_seed)
    return rows, min(cfg.num_eval_examples, len(rows))


def bytes_per_target(cfg: DataConfig, rows: PackedRows) -> float | None:
    """UTF-8 bytes of text per target token of ``rows``' split (targets: every token but each
    document's first, plus its BOS-predicted first token and its EOS when added), or None for
    a split without text. Bits per byte = loss per target / ln 2 / this."""
    counts = read_index(rows.split.directory)["splits"][rows.split.split]
    docs = counts["documents"]
    targets = counts["tokens"] - docs + docs * (int(cfg.add_bos) + int(cfg.add_eos))
    if not counts.get("text_bytes") or targets <= 0:
        return None
    return counts["text_bytes"] / targets


def check_text_data(cfg: DataConfig, model_vocab_size: int) -> None:
    """Everything task ``text`` needs, checked before any compilation: one source, the
    tokenizer, ``data.vocab_size`` equal to its id count, the model's embedding large enough,
    the prepared corpus (its tokenizer the same) and its splits long enough for ``seq_len``."""
    _sources(cfg)
    tokenizer = text_tokenizer(cfg)
    if cfg.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"data.vocab_size must be the tokenizer's id count {tokenizer.vocab_size} "
            f"({tokenizer.describe()}); got {cfg.vocab_size}"
        )
    check_vocab(model_vocab_size, tokenizer)
    directory = prepared_dir(cfg, tokenizer)
    for split, seed in (("train", cfg.seed), ("validation", cfg.eval_seed)):
        data = PreparedSplit(directory, split, tokenizer=tokenizer)
        try:
            PackedRows(
                data, seq_len=cfg.seq_len, seed=seed, add_bos=cfg.add_bos, add_eos=cfg.add_eos
            )
        except ValueError as e:
            hint = ""
            if split == "validation":
                hint = (
                    "; evaluation needs a held-out split: hold out more documents "
                    "(data.text_val_every, or `memarch data prepare --val-every`)"
                )
            raise ValueError(f"{e}{hint}") from None


__all__ = [
    "EndlessRows",
    "bytes_per_target",
    "cache_dir",
    "check_text_data",
    "default_data_dir",
    "eval_rows",
    "local_corpus",
    "packed_rows",
    "prepared_dir",
    "text_split",
    "text_tokenizer",
    "train_rows",
]
