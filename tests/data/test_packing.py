"""memarch.data.packing: packed rows over prepared shards, per-process rows, grain workers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from memarch.data.documents import LocalCorpus
from memarch.data.packing import (
    PackedRows,
    PreparedSplit,
    ProcessRows,
    process_batches,
    process_rows,
)
from memarch.data.prepare import is_validation, prepare
from memarch.data.shards import RecordReader
from memarch.data.source import IGNORE_INDEX
from memarch.data.tokenizers import load_tokenizer

T = 16
BOS, EOS = 1, 2  # <s>, </s> of the test BPE tokenizer


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, make_documents, bpe_dir) -> tuple[Path, list[list[int]]]:
    """A prepared corpus (two jsonl files, one with an empty document and one document far
    longer than ``T``) and the library's own encoding of its training documents."""
    root = tmp_path_factory.mktemp("packing")
    docs = make_documents(120, seed=3)
    docs[10] = ""
    docs[11] = " ".join(["long"] * 300)
    for f in range(2):
        lines = [json.dumps({"text": t}) for t in docs[f * 60 : (f + 1) * 60]]
        (root / f"d{f}.jsonl").write_text("\n".join(lines))
    prepare(
        LocalCorpus((str(root / "*.jsonl"),)),
        root / "out",
        bpe_dir,
        val_every=6,
        shard_bytes=5000,
        progress=False,
    )
    lib = Tokenizer.from_file(f"{bpe_dir}/tokenizer.json")
    train = [
        lib.encode(t, add_special_tokens=False).ids
        for f in range(2)
        for i, t in enumerate(docs[f * 60 : (f + 1) * 60])
        if t and not is_validation(f"d{f}.jsonl", i, 6)
    ]
    return root / "out", train


def split_at_bos(tokens: np.ndarray) -> list[list[int]]:
    starts = np.flatnonzero(tokens == BOS).tolist() + [len(tokens)]
    return [tokens[a:b].tolist() for a, b in zip(starts[:-1], starts[1:], strict=True)]


def test_every_training_token_is_used_once_per_epoch(prepared, bpe_dir):
    out, train = prepared
    split = PreparedSplit(out, tokenizer=load_tokenizer(bpe_dir))
    rows = PackedRows(split, seq_len=T, seed=5, add_bos=True, add_eos=True)
    total = sum(len(d) + 2 for d in train)
    assert rows.num_tokens == total and len(rows) == (total - 1) // T
    stream = np.concatenate([rows[i]["inputs"] for i in range(len(rows))])
    pieces = split_at_bos(stream)
    assert stream[0] == BOS and len(stream) == len(rows) * T
    want = Counter(tuple([BOS, *d, EOS]) for d in train)
    got = Counter(tuple(p) for p in pieces[:-1])  # complete documents
    missing = want - got
    assert not got - want  # no document twice, none invented
    # what is missing is the cut last document and those in the dropped tail (< T + 1 tokens)
    assert sum(len(d) for d in missing.elements()) == len(pieces[-1]) + (total - len(stream))
    assert any(d[: len(pieces[-1])] == tuple(pieces[-1]) for d in missing)
    assert max(map(len, train)) > 3 * T  # a document spans several rows
    # the epoch order is a seeded permutation: a different seed, a different stream
    other = PackedRows(split, seq_len=T, seed=6, add_bos=True, add_eos=True)
    assert not np.array_equal(other[0]["inputs"], rows[0]["inputs"])


def test_no_target_crosses_a_document_boundary(prepared):
    out, _ = prepared
    rows = PackedRows(PreparedSplit(out), seq_len=T, seed=0, add_bos=True, add_eos=True)
    for i in range(len(rows)):
        row = rows[i]
        inputs, targets, seg = row["inputs"], row["targets"], row["segment_ids"]
        assert all(v.dtype == np.int32 and v.shape == (T,) for v in row.values())
        assert seg[0] == 1 and np.all(np.diff(seg) >= 0) and np.all(np.diff(seg) <= 1)
        np.testing.assert_array_equal(seg[1:] != seg[:-1], inputs[1:] == BOS)
        same = seg[1:] == seg[:-1]
        np.testing.assert_array_equal(targets[:-1][same], inputs[1:][same])
        assert np.all(targets[:-1][~same] == IGNORE_INDEX)
        nxt = rows[i + 1]["inputs"][0] if i + 1 < len(rows) else None
        if nxt is not None:
            assert targets[-1] == (IGNORE_INDEX if nxt == BOS else nxt)
        assert np.all(targets[targets != IGNORE_INDEX] != BOS)  # a BOS is never a target
        assert np.all(targets[inputs == EOS] == IGNORE_INDEX)  # nothing is predicted after EOS


def test_rows_without_bos_eos_and_with_eos_only(prepared):
    out, train = prepared
    split = PreparedSplit(out)
    plain = PackedRows(split, seq_len=T, seed=1)
    assert plain.num_tokens == sum(map(len, train))
    assert not any(np.any(plain[i]["inputs"] == BOS) for i in range(len(plain)))
    eos_only = PackedRows(split, seq_len=T, seed=1, add_eos=True)
    ends = sum(int(np.sum(eos_only[i]["inputs"] == EOS)) for i in range(len(eos_only)))
    assert len(train) - 2 <= ends <= len(train)


def test_a_row_is_a_pure_function_of_seed_and_index_across_epochs(prepared):
    out, _ = prepared
    a = PackedRows(PreparedSplit(out), seq_len=T, seed=9, add_bos=True)
    b = PackedRows(PreparedSplit(out), seq_len=T, seed=9, add_bos=True)
    n = len(a)
    for r in (3, n + 3, 0, 2 * n - 1, 5):
        np.testing.assert_array_equal(a[r]["inputs"], b[r]["inputs"])
    epoch0 = np.concatenate([a[i]["inputs"] for i in range(n)])
    epoch1 = np.concatenate([a[n + i]["inputs"] for i in range(n)])
    assert not np.array_equal(epoch0, epoch1)  # reshuffled each epoch


def test_start_up_reads_no_record(prepared, monkeypatch):
    out, _ = prepared
    reads = []
    real = RecordReader.read
    monkeypatch.setattr(RecordReader, "read", lambda self, r: reads.append(r) or real(self, r))
    rows = PackedRows(PreparedSplit(out), seq_len=T, seed=0)
    assert reads == []
    rows[len(rows) // 2]
    assert 1 <= len(reads) <= 3  # only the documents the row overlaps


def test_process_rows_compose_the_global_batch(prepared):
    out, _ = prepared
    rows = PackedRows(PreparedSplit(out), seq_len=T, seed=2, add_bos=True)
    B = 8
    for step in (0, 1, 7):
        whole = [r for p in range(1) for r in process_rows(step, B, p, 1)]
        assert whole == list(range(step * B, (step + 1) * B))
        for P in (2, 4):
            assert [r for p in range(P) for r in process_rows(step, B, p, P)] == whole
    for P in (1, 2, 4):
        per_process = [
            ProcessRows(rows, global_batch_size=B, process_index=p, process_count=P, num_steps=3)
            for p in range(P)
        ]
        for step in range(3):
            batch = [
                src[step * (B // P) + k]["inputs"] for src in per_process for k in range(B // P)
            ]
            np.testing.assert_array_equal(
                np.stack(batch), np.stack([rows[step * B + r]["inputs"] for r in range(B)])
            )
    with pytest.raises(ValueError, match="divisible by process_count=3"):
        process_rows(0, 8, 0, 3)
    with pytest.raises(ValueError, match=r"process_index must be in \[0, process_count=2\)"):
        process_rows(0, 8, 2, 2)


def test_grain_batches_do_not_depend_on_worker_count_and_resume(prepared):
    out, _ = prepared
    rows = PackedRows(PreparedSplit(out), seq_len=T, seed=4, add_bos=True, add_eos=True)
    kw = dict(global_batch_size=4, process_index=1, process_count=2, num_steps=6)
    inline = list(process_batches(rows, **kw))
    workers = list(process_batches(rows, worker_count=2, **kw))
    resumed = list(process_batches(rows, start_step=4, **kw))
    assert len(inline) == len(workers) == 6 and len(resumed) == 2
    for a, b in zip(inline, workers, strict=True):
        assert a.keys() == b.keys() == {"inputs", "targets", "segment_ids"}
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    for a, b in zip(inline[4:], resumed, strict=True):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(
        inline[1]["inputs"], np.stack([rows[4 + 2]["inputs"], rows[4 + 3]["inputs"]])
    )


def test_refused_and_bad_input(prepared, sp_model, tmp_path):
    out, _ = prepared
    with pytest.raises(ValueError, match="was prepared with tokenizer HFTokenizer"):
        PreparedSplit(out, tokenizer=load_tokenizer(sp_model))
    with pytest.raises(ValueError, match="not with fingerprint"):
        PreparedSplit(out, fingerprint="0" * 64)
    with pytest.raises(ValueError, match="split must be one of"):
        PreparedSplit(out, "test")
    with pytest.raises(ValueError, match="holds no prepared data"):
        PreparedSplit(tmp_path)
    val = PreparedSplit(out, "validation")
    with pytest.raises(ValueError, match="fewer than seq_len"):
        PackedRows(val, seq_len=10**6, seed=0)
    with pytest.raises(ValueError, match="seq_len must be an int >= 1"):
        PackedRows(val, seq_len=0, seed=0)
    no_eos = tmp_path / "no_eos"
    no_eos.mkdir()
    for p in out.iterdir():
        (no_eos / p.name).write_bytes(p.read_bytes())
    index = json.loads((no_eos / "index.json").read_text())
    index["tokenizer"]["eos_id"] = None
    (no_eos / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="add_eos=True but the tokenizer of .* has no EOS id"):
        PackedRows(PreparedSplit(no_eos), seq_len=T, seed=0, add_eos=True)
