"""``prepare``: tokenize a corpus into ArrayRecord shards (:mod:`memarch.data.shards`).

Plan: the source's units (:mod:`memarch.data.documents`; sorted files, or TFDS record ranges)
are grouped into shards — consecutive local files up to ``shard_bytes`` of input each (a
larger file is a shard of its own), one TFDS record range each. A shard's documents are
tokenized (no special tokens; BOS/EOS are added by the packer) and written, in input order,
to its ``train`` or ``validation`` file; empty documents (no tokens) are counted and skipped.

Validation split rule: document ``d`` (index ``i`` in unit ``key``) is held out iff
``int.from_bytes(sha256(f"{key}\\n{i}".encode()).digest()[:8], "big") % val_every == 0``
(``val_every = 0``: no validation split). It depends only on where the document is, so it is
stable when files are added and across tokenizers.

Workers: shards are tokenized in parallel by ``workers`` processes (spawned); each shard's
files depend only on its inputs, so the output is byte-identical whatever the worker count.

Resume and staleness: a shard's manifest records ``inputs_sha256``, a digest of its units (key,
path, size, content sha256), the tokenizer fingerprint and the options. A re-run skips a shard
whose manifest matches and whose files are present with the recorded sizes, and rebuilds any
other (files go to temporary names and are renamed when complete, manifest last). ``index.json``
is removed before any shard is rebuilt and written when all are complete, so a loader never
reads a mix of old and new shards.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing
import re
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from memarch.data.documents import (
    Corpus,
    LocalCorpus,
    TFDSCorpus,
    Unit,
    file_fingerprint,
    read_unit,
    unit_files,
)
from memarch.data.shards import (
    FORMAT,
    INDEX_NAME,
    SPLITS,
    SplitWriter,
    dump_json,
    lengths_file,
    manifest_file,
    records_file,
    shard_name,
    token_dtype,
    write_atomic,
    write_index,
)
from memarch.data.tokenizers import FROM_FILES, TextTokenizer, load_tokenizer

SPLIT_RULE = (
    "document i of unit key goes to 'validation' iff "
    "int.from_bytes(sha256(f'{key}\\n{i}'.encode()).digest()[:8], 'big') % val_every == 0 "
    "(val_every = 0: no validation split); key = the file's path below its glob pattern's "
    "directory, or '{tfds name}/{split}'; i = the document's index in its file (paragraph, "
    "line or row number) or its TFDS record number"
)
DEFAULT_SHARD_BYTES = 256 << 20
ENCODE_BATCH = 512  # documents tokenized per encode_batch call


def is_validation(key: str, index: int, val_every: int) -> bool:
    """The validation split rule (see the module docstring)."""
    if val_every == 0:
        return False
    digest = hashlib.sha256(f"{key}\n{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % val_every == 0


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to write one shard (picklable)."""

    out_dir: str
    name: str
    units: tuple[Unit, ...]
    corpus: Corpus
    tokenizer_args: tuple  # (spec, bos_id, eos_id, pad_id) for load_tokenizer
    val_every: int
    dtype: str
    inputs_sha256: str


_TOKENIZERS: dict[tuple, TextTokenizer] = {}  # per worker process


def _tokenizer(args: tuple) -> TextTokenizer:
    if args not in _TOKENIZERS:
        spec, bos, eos, pad = args
        _TOKENIZERS[args] = load_tokenizer(spec, bos_id=bos, eos_id=eos, pad_id=pad)
    return _TOKENIZERS[args]


def write_shard(job: ShardJob) -> dict:
    """Tokenizes the units of ``job`` into its split files and writes its manifest; returns
    the manifest."""
    tok = _tokenizer(job.tokenizer_args)
    out = Path(job.out_dir)
    writers = {s: SplitWriter(out, s, job.name, job.dtype) for s in SPLITS}
    empty = 0

    def flush(batch: list[tuple[str, str]]) -> int:
        ids = tok.encode_batch([text for _, text in batch])
        skipped = 0
        for (split, text), doc in zip(batch, ids, strict=True):
            if doc:
                writers[split].add(doc, len(text.encode("utf-8")))
            else:
                skipped += 1
        return skipped

    batch: list[tuple[str, str]] = []
    for unit in job.units:
        for i, text in read_unit(unit, job.corpus):
            split = "validation" if is_validation(unit.key, i, job.val_every) else "train"
            batch.append((split, text))
            if len(batch) == ENCODE_BATCH:
                empty += flush(batch)
                batch = []
    empty += flush(batch)
    manifest = {
        "name": job.name,
        "inputs_sha256": job.inputs_sha256,
        "units": [u.key if u.kind != "tfds" else f"{u.key}[{u.start}:{u.stop}]" for u in job.units],
        "empty_documents": empty,
        **{s: writers[s].finish() for s in SPLITS},
    }
    write_atomic(out / manifest_file(job.name), dump_json(manifest))
    return manifest


def plan_shards(units: Sequence[Unit], shard_bytes: int) -> list[tuple[Unit, ...]]:
    """Consecutive local files up to ``shard_bytes`` per shard; each TFDS unit alone."""
    shards: list[list[Unit]] = []
    size = 0
    for u in units:
        if u.kind == "tfds" or not shards or size + u.size > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(u)
        size += u.size
    return [tuple(s) for s in shards]


def _digest(obj) -> str:
    return hashlib.sha256(dump_json(obj)).hexdigest()


def _complete(out: Path, name: str, inputs_sha256: str) -> dict | None:
    """The manifest of shard ``name`` if it is complete for these inputs, else ``None``."""
    path = out / manifest_file(name)
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("inputs_sha256") != inputs_sha256:
        return None
    for s in SPLITS:
        part = manifest.get(s, {})
        f = out / str(part.get("records", ""))
        if not f.is_file() or f.stat().st_size != part.get("bytes"):
            return None
        if not (out / str(part.get("lengths", ""))).is_file():
            return None
    return manifest


_OWN_FILE = re.compile(
    r"^(?:(?:train|validation)-\d{5}-of-\d{5}\.(?:array_record|lengths\.npy)"
    r"|shard-\d{5}-of-\d{5}\.json|index\.json)(?:\.tmp)?$"
)


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Deletes files of this format in ``out`` that the current plan does not name."""
    for p in out.iterdir():
        if p.is_file() and _OWN_FILE.match(p.name) and p.name not in keep:
            p.unlink()


def prepare(
    corpus: Corpus,
    out_dir: str | Path,
    tokenizer: TextTokenizer | str | Path,
    *,
    val_every: int = 100,
    workers: int = 1,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
) -> dict:
    """Tokenizes ``corpus`` into shards in ``out_dir`` (see the module docstring) and returns
    the index (also written to ``out_dir/index.json``). ``tokenizer``: a
    :class:`~memarch.data.tokenizers.TextTokenizer` or a spec for
    :func:`~memarch.data.tokenizers.load_tokenizer`. ``ValueError`` for bad options, a corpus
    without tokens, or a problem in an input (naming the file)."""
    if isinstance(val_every, bool) or not isinstance(val_every, int) or val_every < 0:
        raise ValueError(f"val_every must be an int >= 0 (0: no validation); got {val_every!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1; got {workers!r}")
    if shard_bytes < 1:
        raise ValueError(f"shard_bytes must be >= 1; got {shard_bytes}")
    tok = tokenizer if isinstance(tokenizer, TextTokenizer) else load_tokenizer(tokenizer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    units = corpus.units()
    if not units:
        raise ValueError(f"the corpus {corpus.options()} has no documents")
    fingerprints = {f: file_fingerprint(f) for u in units for f in unit_files(u, corpus)}
    dtype = token_dtype(tok.vocab_size)
    options = {**corpus.options(), "val_every": val_every, "shard_bytes": shard_bytes}
    tokenizer_args = (
        str(tok.path) if tok.path is not None else "byte",
        tok.bos_id,
        tok.eos_id,
        tok.pad_id,
    )
    groups = plan_shards(units, shard_bytes)
    jobs = []
    for k, group in enumerate(groups):
        inputs = {
            "format": FORMAT,
            "units": [
                {
                    **dataclasses.asdict(u),
                    "files": [
                        {k2: fingerprints[f][k2] for k2 in ("path", "size", "sha256")}
                        for f in unit_files(u, corpus)
                    ],
                }
                for u in group
            ],
            "tokenizer": tok.fingerprint,
            "dtype": dtype,
            "options": options,
            "split_rule": SPLIT_RULE,
        }
        name = shard_name(k, len(groups))
        jobs.append(
            ShardJob(
                str(out), name, group, corpus, tokenizer_args, val_every, dtype, _digest(inputs)
            )
        )
    manifests = {j.name: _complete(out, j.name, j.inputs_sha256) for j in jobs}
    todo = [j for j in jobs if manifests[j.name] is None]
    keep = {manifest_file(j.name) for j in jobs} | {
        f(s, j.name) for j in jobs for s in SPLITS for f in (records_file, lengths_file)
    }
    if todo:
        (out / INDEX_NAME).unlink(missing_ok=True)
    _remove_stale(out, keep | ({INDEX_NAME} if not todo else set()))
    sizes = {j.name: sum(u.size for u in j.units) for j in jobs}
    with tqdm(
        total=sum(sizes.values()), unit="B", unit_scale=True, desc="prepare", disable=not progress
    ) as bar:
        bar.update(sum(sizes[j.name] for j in jobs if manifests[j.name] is not None))
        if workers == 1 or len(todo) <= 1:
            for j in todo:
                manifests[j.name] = write_shard(j)
                bar.update(sizes[j.name])
        else:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
                futures = {pool.submit(write_shard, j): j for j in todo}
                try:
                    for fut in cf.as_completed(futures):
                        manifests[futures[fut].name] = fut.result()
                        bar.update(sizes[futures[fut].name])
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise
    shards = [manifests[j.name] for j in jobs]
    if sum(m[s]["tokens"] for m in shards for s in SPLITS) == 0:
        raise ValueError(f"the corpus {corpus.options()} has no tokens (every document is empty)")
    return write_index(
        out,
        tokenizer=tok.info(),
        dtype=dtype,
        options=options,
        split_rule=SPLIT_RULE,
        sources=[fingerprints[f] for f in sorted(fingerprints)],
        shards=shards,
    )


def _special(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def build_parser() -> argparse.ArgumentParser:
    """``memarch data prepare`` arguments."""
    p = argparse.ArgumentParser(
        prog="memarch data prepare",
        description="Tokenize a corpus into ArrayRecord shards plus index.json.",
    )
    p.add_argument(
        "sources",
        nargs="*",
        metavar="SRC",
        help="glob patterns of .txt/.jsonl/.parquet files (quote them)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--tokenizer",
        required=True,
        help="'byte', a tokenizer.json, a SentencePiece .model, or a directory",
    )
    p.add_argument("--text-field", default="text", help="jsonl/parquet/TFDS text field")
    p.add_argument(
        "--txt-mode",
        choices=["file", "paragraph"],
        default="file",
        help=".txt: one document per file or per blank-line paragraph",
    )
    p.add_argument(
        "--errors",
        choices=["strict", "replace"],
        default="strict",
        help="invalid UTF-8: raise (naming file and offset) or replace",
    )
    p.add_argument("--workers", type=int, default=1, help="tokenizing processes")
    p.add_argument(
        "--val-every",
        type=int,
        default=100,
        help="hold out ~1/N of the documents (hash rule); 0: none",
    )
    p.add_argument(
        "--shard-mb", type=int, default=DEFAULT_SHARD_BYTES >> 20, help="input MB per shard"
    )
    p.add_argument("--tfds", metavar="NAME", help="a TFDS dataset (name[/config][:version])")
    p.add_argument("--data-dir", help="TFDS data_dir holding the prepared dataset")
    p.add_argument("--split", default="train", help="TFDS split to read")
    for name in ("bos", "eos", "pad"):
        p.add_argument(
            f"--{name}-id",
            type=_special,
            default=FROM_FILES,
            help=f"override the {name.upper()} id (an int, or 'none')",
        )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``memarch data prepare SRC... --out DIR --tokenizer PATH …``; prints a summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tfds and args.sources:
        parser.error("give either SRC patterns or --tfds, not both")
    if args.tfds:
        if not args.data_dir:
            parser.error("--tfds needs --data-dir")
        corpus: Corpus = TFDSCorpus(
            args.tfds, args.data_dir, args.split, args.text_field, args.errors
        )
    elif args.sources:
        corpus = LocalCorpus(tuple(args.sources), args.text_field, args.txt_mode, args.errors)
    else:
        parser.error("give SRC patterns or --tfds NAME")
    specials = {f"{n}_id": getattr(args, f"{n}_id") for n in ("bos", "eos", "pad")}
    tok = load_tokenizer(args.tokenizer, **specials)
    index = prepare(
        corpus,
        args.out,
        tok,
        val_every=args.val_every,
        workers=args.workers,
        shard_bytes=args.shard_mb << 20,
        progress=not args.no_progress,
    )
    for s in SPLITS:
        t = index["splits"][s]
        print(f"{s}: {t['documents']} documents, {t['tokens']} tokens")
    print(
        f"{len(index['shards'])} shards in {args.out} (tokenizer {index['tokenizer']['class']},"
        f" fingerprint {index['tokenizer']['fingerprint'][:12]})"
    )
    return 0


__all__ = ["SPLIT_RULE", "build_parser", "is_validation", "main", "plan_shards", "prepare"]

if __name__ == "__main__":
    raise SystemExit(main())
