"""Language-model data path (issue 20): loader start-up, loader throughput, prepare throughput.

    python experiments/bench_data.py [--tokens 100000000] [--small-tokens 10000000]
        [--seconds 5] [--prepare-mb 16] [--work DIR] [--out PATH]

1. **Synthetic prepared corpora** of ``--small-tokens`` and ``--tokens`` token ids (random ids
   < 32,000, document lengths drawn from a log-normal of mean ≈ 1,000 tokens), written through
   the same shard writer as ``memarch data prepare`` (:class:`memarch.data.shards.SplitWriter`,
   ``write_index``) in shards of ≈ 10M tokens. They are synthetic: no text is tokenized; they
   exist to measure the loader. Kept in ``--work`` between runs.
2. **Loader start-up**: ``PreparedSplit`` + ``PackedRows`` construction and the first row
   (reads ``index.json`` and the per-shard lengths arrays, draws the epoch permutation; no
   record scan), best of 3, for both corpora: it should not grow like the corpus.
3. **Loader throughput**, one CPU core (the process pinned to one core with
   ``sched_setaffinity``): consecutive packed rows of 2048 tokens (``{"inputs", "targets",
   "segment_ids"}``, BOS added) read for ``--seconds``; tokens/s = rows · 2048 / time, per
   wall-clock second and per CPU second of this process (``time.process_time``: what the core
   delivers when other jobs share it). Target ≥ 5M tokens/s.
4. **prepare throughput**: a byte-level BPE tokenizer (vocabulary 8,192, ``tokenizers``'
   trainer) trained on ``../shared/data/tinyshakespeare.txt`` if present, else generated text;
   ``--prepare-mb`` MB of jsonl documents (its paragraphs, repeated) prepared with one worker
   and the tokenizer's own threads off (``TOKENIZERS_PARALLELISM=false``, ``RAYON_NUM_THREADS=1``):
   MB of text per second per process (wall clock and CPU time), beside the tokenizer's own
   ``encode_batch`` rate on the same text.

Prints a Markdown table and writes it to ``--out`` (``experiments/results/bench_data.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from memarch.data.documents import LocalCorpus
from memarch.data.packing import PackedRows, PreparedSplit
from memarch.data.prepare import prepare
from memarch.data.shards import (
    SPLITS,
    SplitWriter,
    dump_json,
    manifest_file,
    read_index,
    shard_name,
    token_dtype,
    write_atomic,
    write_index,
)

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 32_000
TOKENS_PER_SHARD = 10_000_000
SEQ_LEN = 2048


def synthetic_corpus(directory: Path, num_tokens: int, seed: int = 0) -> dict:
    """Writes (once) a prepared directory of ``num_tokens`` random ids; returns its index."""
    if (directory / "index.json").is_file():
        index = read_index(directory)
        if index["splits"]["train"]["tokens"] >= num_tokens:
            return index
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    dtype = token_dtype(VOCAB)
    num_shards = -(-num_tokens // TOKENS_PER_SHARD)
    shards = []
    for k in range(num_shards):
        name = shard_name(k, num_shards)
        budget = min(TOKENS_PER_SHARD, num_tokens - k * TOKENS_PER_SHARD)
        lengths = []
        while budget > 0:
            n = int(min(budget, max(1, rng.lognormal(mean=6.5, sigma=0.6))))
            lengths.append(n)
            budget -= n
        ids = rng.integers(3, VOCAB, size=sum(lengths), dtype=np.uint16)
        writers = {s: SplitWriter(directory, s, name, dtype) for s in SPLITS}
        ends = np.cumsum(lengths)
        for a, b in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True):
            writers["train"].add(ids[a:b], text_bytes=0)  # synthetic: no text
        manifest = {"name": name, "inputs_sha256": "synthetic", "empty_documents": 0}
        manifest |= {s: w.finish() for s, w in writers.items()}
        write_atomic(directory / manifest_file(name), dump_json(manifest))
        shards.append(manifest)
    info = {
        "class": "SyntheticIds",
        "path": None,
        "vocab_size": VOCAB,
        "bos_id": 1,
        "eos_id": 2,
        "pad_id": 0,
        "fingerprint": hashlib.sha256(b"synthetic ids").hexdigest(),
    }
    return write_index(
        directory,
        tokenizer=info,
        dtype=dtype,
        options={"source": "synthetic", "seed": seed},
        split_rule="none (synthetic: every document is in train)",
        sources=[],
        shards=shards,
    )


def start_up(directory: Path) -> float:
    """Best of 3: seconds from nothing to the first packed row."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        rows = PackedRows(PreparedSplit(directory), seq_len=SEQ_LEN, seed=0, add_bos=True)
        rows[0]
        times.append(time.perf_counter() - t0)
    return min(times)


def throughput(directory: Path, seconds: float) -> tuple[float, float, int]:
    """Tokens per wall-clock second and per CPU second (``process_time``: what one core
    delivers when other jobs share it) reading consecutive rows on one core; rows read."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = PackedRows(PreparedSplit(directory), seq_len=SEQ_LEN, seed=0, add_bos=True)
    rows[0]
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for _ in range(64):
            rows[1 + n]
            n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n * SEQ_LEN / wall, n * SEQ_LEN / cpu, n


def corpus_text() -> list[str]:
    """Paragraphs of tinyshakespeare if present (first found above this file), else generated."""
    for parent in ROOT.parents:
        f = parent / "shared" / "data" / "tinyshakespeare.txt"
        if f.is_file():
            return [p for p in f.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    rng = np.random.default_rng(0)
    words = "the a model memory state gate key value writes reads forgets fact über 東京".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(20, 200)))) for _ in range(5000)]


def prepare_rate(work: Path, megabytes: int) -> tuple[float, float, float, int, float]:
    """A one-worker prepare with a BPE tokenizer: MB of text per wall-clock second and per CPU
    second, seconds, documents; and the tokenizer alone (``encode_batch`` of up to 4 MB of the
    same text) in MB per CPU second."""
    paragraphs = corpus_text()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8192,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(paragraphs, trainer)
    tok.save(str(work / "bpe.json"))
    src = work / "text"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    text_bytes, docs, f = 0, 0, 0
    while text_bytes < megabytes << 20:
        lines = []
        for p in paragraphs:
            lines.append(json.dumps({"text": p}, ensure_ascii=False))
            text_bytes += len(p.encode())
        (src / f"part{f:03d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        docs += len(lines)
        f += 1
    sample, sample_bytes = [], 0
    for p in paragraphs * (1 + (4 << 20) // max(1, sum(len(p.encode()) for p in paragraphs))):
        if sample_bytes >= min(megabytes, 4) << 20:
            break
        sample.append(p)
        sample_bytes += len(p.encode())
    c0 = time.process_time()
    for a in range(0, len(sample), 512):
        tok.encode_batch(sample[a : a + 512], add_special_tokens=False)
    alone = sample_bytes / 2**20 / (time.process_time() - c0)
    out = work / "prepared_text"
    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    prepare(LocalCorpus((str(src / "*.jsonl"),)), out, work / "bpe.json", progress=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    mb = text_bytes / 2**20
    return mb / seconds, mb / cpu, seconds, docs, alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=100_000_000)
    ap.add_argument("--small-tokens", type=int, default=10_000_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--prepare-mb", type=int, default=16)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "memarch_bench_data"))
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_data.md"))
    args = ap.parse_args()
    # per-process numbers: the tokenizer's own thread pool off (read when it first runs)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lines = [
        "# bench_data: the language-model data path (issue 20)",
        "",
        f"`python experiments/bench_data.py --tokens {args.tokens} --small-tokens "
        f"{args.small_tokens} --seconds {args.seconds} --prepare-mb {args.prepare_mb}`; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with "
        f"other jobs while it ran: load average {os.getloadavg()[0]:.1f} at the start; "
        "absolute numbers are pessimistic).",
        "",
        "| measure | corpus | value |",
        "|---|---|---|",
    ]
    corpora = {}
    for n in (args.small_tokens, args.tokens):
        t0 = time.perf_counter()
        index = synthetic_corpus(work / f"synthetic_{n}", n)
        corpora[n] = index
        print(f"synthetic corpus {n:,} tokens ready ({time.perf_counter() - t0:.1f} s)")
    for n, index in corpora.items():
        docs = index["splits"]["train"]["documents"]
        s = start_up(work / f"synthetic_{n}")
        lines.append(
            f"| loader start-up (index + lengths + permutation + first row) | {n / 1e6:.0f}M "
            f"synthetic tokens, {docs:,} documents, {len(index['shards'])} shards | {s:.3f} s |"
        )
        print(lines[-1])
    rate, cpu_rate, rows = throughput(work / f"synthetic_{args.tokens}", args.seconds)
    lines.append(
        f"| loader throughput, 1 core, packed rows of {SEQ_LEN} tokens (target ≥ 5M) | "
        f"{args.tokens / 1e6:.0f}M synthetic tokens ({rows:,} rows read) | "
        f"{rate / 1e6:.2f}M tokens/s wall clock; {cpu_rate / 1e6:.2f}M tokens per CPU second |"
    )
    print(lines[-1])
    mbps, cpu_mbps, seconds, docs, alone = prepare_rate(work, args.prepare_mb)
    lines.append(
        f"| prepare, 1 worker, HF byte-level BPE (8,192 ids), tokenizer threads off | "
        f"{args.prepare_mb} MB of jsonl text, {docs:,} documents ({seconds:.1f} s) | "
        f"{mbps:.2f} MB/s wall clock; {cpu_mbps:.2f} MB per CPU second |"
    )
    lines.append(
        f"| the same tokenizer alone (`encode_batch`, 512 documents a call, one thread) | "
        f"{min(args.prepare_mb, 4)} MB of the same text | {alone:.2f} MB per CPU second |"
    )
    print("\n".join(lines[-2:]))
    lines += [
        "",
        "Synthetic corpora: random ids written through `SplitWriter`/`write_index` (the writer "
        "of `memarch data prepare`), not tokenized text. Start-up reads `index.json`, one "
        "`lengths.npy` per shard (8 bytes per document) and draws the epoch permutation: it is "
        "O(documents) with a small constant and reads no record. prepare's rate is bounded by "
        "the tokenizer (compare the last two rows); it scales with `--workers` (one process "
        "per shard). Wall-clock rates suffer from the other jobs on the 2 shared cores; rates "
        "per CPU second (`time.process_time`, this process only: one core, one thread) are what "
        "one core delivers.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
