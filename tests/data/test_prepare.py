"""memarch.data.prepare: deterministic, resumable, content-keyed ArrayRecord shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import Tokenizer

from memarch.data import prepare as prepare_module
from memarch.data.documents import LocalCorpus
from memarch.data.packing import PreparedSplit
from memarch.data.prepare import SPLIT_RULE, is_validation, main, prepare
from memarch.data.shards import INDEX_NAME, read_index
from memarch.data.tokenizers import load_tokenizer

LONG = " ".join(["a long document that spans many packed rows"] * 60)
UNICODE = "東京 😀🚀 Ωμέγα привет ∑∫√ ✓ " * 20 + "\u0301\u200d\U0001f469\u200d\U0001f52c"


@pytest.fixture
def write_corpus(make_documents):
    """``write_corpus(root)`` writes the test corpus (:func:`corpus_files`) under ``root``."""
    return lambda root: corpus_files(root, make_documents(90, seed=7))


def corpus_files(root: Path, docs: list[str]) -> list[tuple[str, int, str]]:
    """Three jsonl files and two txt files (paragraph mode off): ``(key, index, text)`` of
    every document, including an empty one, a long one and a Unicode-heavy one."""
    root.mkdir(parents=True, exist_ok=True)
    docs[5], docs[17], docs[40] = "", LONG, UNICODE
    out = []
    for f in range(3):
        part = docs[f * 30 : (f + 1) * 30]
        (root / f"part{f}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
        out += [(f"part{f}.jsonl", i, t) for i, t in enumerate(part)]
    for f, text in enumerate(("a whole file as one document", UNICODE[::-1])):
        (root / f"file{f}.txt").write_text(text)
        out.append((f"file{f}.txt", 0, text))
    return out


def corpus_of(root: Path) -> LocalCorpus:
    return LocalCorpus((str(root / "*.jsonl"), str(root / "*.txt")))


def tree(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_prepare_is_deterministic_and_ids_equal_the_library(tmp_path, write_corpus, bpe_dir):
    docs = write_corpus(tmp_path / "corpus")
    index = prepare(
        corpus_of(tmp_path / "corpus"),
        tmp_path / "a",
        bpe_dir,
        val_every=4,
        shard_bytes=4000,
        progress=False,
    )
    prepare(
        corpus_of(tmp_path / "corpus"),
        tmp_path / "b",
        bpe_dir,
        val_every=4,
        shard_bytes=4000,
        progress=False,
    )
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert len(index["shards"]) >= 3 and index["dtype"] == "uint16"
    assert index["split_rule"] == SPLIT_RULE and index["empty_documents"] == 1
    assert {s["path"] for s in index["sources"]} == {
        str(p) for p in (tmp_path / "corpus").iterdir()
    }
    assert all(len(s["sha256"]) == 64 and s["size"] > 0 for s in index["sources"])
    lib = Tokenizer.from_file(f"{bpe_dir}/tokenizer.json")
    for split, held_out in (("train", False), ("validation", True)):
        want = [
            lib.encode(t, add_special_tokens=False).ids
            for key, i, t in sorted(docs)  # units are read in key order, documents in order
            if is_validation(key, i, 4) == held_out and t
        ]
        data = PreparedSplit(tmp_path / "a", split, tokenizer=load_tokenizer(bpe_dir))
        got = [data.read(d).tolist() for d in range(len(data))]
        assert got == want
        text_bytes = sum(
            len(t.encode()) for key, i, t in docs if is_validation(key, i, 4) == held_out and t
        )
        assert index["splits"][split] == {
            "documents": len(want),
            "tokens": sum(map(len, want)),
            "text_bytes": text_bytes,
        }
        assert data.lengths.tolist() == [len(w) for w in want]
    assert 0 < index["splits"]["validation"]["documents"] < index["splits"]["train"]["documents"]


def test_worker_processes_write_the_same_bytes(tmp_path, write_corpus, sp_model):
    docs = write_corpus(tmp_path / "corpus")
    kwargs = dict(val_every=5, shard_bytes=4000, progress=False)
    prepare(corpus_of(tmp_path / "corpus"), tmp_path / "one", sp_model, workers=1, **kwargs)
    prepare(corpus_of(tmp_path / "corpus"), tmp_path / "two", sp_model, workers=2, **kwargs)
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    lib = spm.SentencePieceProcessor(model_file=sp_model)  # SentencePiece ids: the library's
    want = [lib.encode(t) for key, i, t in sorted(docs) if not is_validation(key, i, 5) and t]
    data = PreparedSplit(tmp_path / "two", tokenizer=load_tokenizer(sp_model))
    assert [data.read(d).tolist() for d in range(len(data))] == want


def test_interrupted_prepare_resumes_to_the_same_shards(
    tmp_path, write_corpus, bpe_dir, monkeypatch
):
    write_corpus(tmp_path / "corpus")
    kwargs = dict(val_every=4, shard_bytes=4000, progress=False)
    prepare(corpus_of(tmp_path / "corpus"), tmp_path / "whole", bpe_dir, **kwargs)
    real, calls = prepare_module.write_shard, []

    def dies_on_the_second_shard(job):
        calls.append(job.name)
        if len(calls) == 2:  # leave half-written files behind, as a killed worker would
            (Path(job.out_dir) / f"train-{job.name}.array_record.tmp").write_bytes(b"partial")
            raise RuntimeError("worker killed")
        return real(job)

    monkeypatch.setattr(prepare_module, "write_shard", dies_on_the_second_shard)
    with pytest.raises(RuntimeError, match="worker killed"):
        prepare(corpus_of(tmp_path / "corpus"), tmp_path / "resumed", bpe_dir, **kwargs)
    assert not (tmp_path / "resumed" / INDEX_NAME).exists()
    with pytest.raises(ValueError, match="index.json missing"):
        read_index(tmp_path / "resumed")
    first = tmp_path / "resumed" / f"train-{calls[0]}.array_record"
    stamp = first.stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(prepare_module, "write_shard", lambda job: calls.append(job) or real(job))
    prepare(corpus_of(tmp_path / "corpus"), tmp_path / "resumed", bpe_dir, **kwargs)
    assert tree(tmp_path / "resumed") == tree(tmp_path / "whole")
    assert first.stat().st_mtime_ns == stamp  # the complete shard was kept
    n = len(read_index(tmp_path / "whole")["shards"])
    assert len(calls) == n - 1
    calls.clear()
    prepare(corpus_of(tmp_path / "corpus"), tmp_path / "resumed", bpe_dir, **kwargs)
    assert calls == []  # everything up to date: nothing rewritten


def test_changed_inputs_are_rebuilt_never_served_stale(
    tmp_path, write_corpus, bpe_dir, sp_model, monkeypatch
):
    write_corpus(tmp_path / "corpus")
    kwargs = dict(val_every=4, shard_bytes=4000, progress=False)
    before = prepare(corpus_of(tmp_path / "corpus"), tmp_path / "out", bpe_dir, **kwargs)
    real, rebuilt = prepare_module.write_shard, []
    monkeypatch.setattr(
        prepare_module, "write_shard", lambda job: rebuilt.append(job.units) or real(job)
    )
    edited = tmp_path / "corpus" / "file0.txt"
    edited.write_text("a whole file as one docUment")  # same size, new content
    after = prepare(corpus_of(tmp_path / "corpus"), tmp_path / "out", bpe_dir, **kwargs)
    assert len(rebuilt) == 1 and "file0.txt" in [u.key for u in rebuilt[0]]  # its shard only
    assert after["splits"] != before["splits"] or after["shards"] != before["shards"]
    rebuilt.clear()
    prepare(corpus_of(tmp_path / "corpus"), tmp_path / "out", sp_model, **kwargs)
    assert len(rebuilt) == len(after["shards"])  # another tokenizer: every shard rebuilt
    rebuilt.clear()
    prepare(
        corpus_of(tmp_path / "corpus"),
        tmp_path / "out",
        sp_model,
        val_every=3,
        shard_bytes=4000,
        progress=False,
    )
    assert len(rebuilt) == len(after["shards"])  # other options: every shard rebuilt
    with pytest.raises(ValueError, match="was prepared with tokenizer SentencePieceTokenizer"):
        PreparedSplit(tmp_path / "out", tokenizer=load_tokenizer(bpe_dir))


def test_fewer_shards_remove_the_stale_ones(tmp_path, write_corpus, bpe_dir):
    write_corpus(tmp_path / "corpus")
    prepare(
        corpus_of(tmp_path / "corpus"), tmp_path / "out", bpe_dir, shard_bytes=4000, progress=False
    )
    index = prepare(corpus_of(tmp_path / "corpus"), tmp_path / "out", bpe_dir, progress=False)
    assert len(index["shards"]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [INDEX_NAME, "shard-00000-of-00001.json"]
        + [
            f"{s}-00000-of-00001.{e}"
            for s in ("train", "validation")
            for e in ("array_record", "lengths.npy")
        ]
    )


def test_non_utf8_input_is_an_error_or_replaced(tmp_path, bpe_dir):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bad.txt").write_bytes("ok ✓ \n".encode() + b"\xc3\x28 tail")
    corpus = LocalCorpus((str(tmp_path / "c" / "*.txt"),))
    with pytest.raises(ValueError, match=r"bad\.txt: invalid UTF-8 at byte offset 8"):
        prepare(corpus, tmp_path / "out", bpe_dir, progress=False)
    replaced = LocalCorpus((str(tmp_path / "c" / "*.txt"),), errors="replace")
    index = prepare(replaced, tmp_path / "out", bpe_dir, val_every=0, progress=False)
    data = PreparedSplit(tmp_path / "out", tokenizer=load_tokenizer(bpe_dir))
    assert load_tokenizer(bpe_dir).decode(data.read(0).tolist()) == "ok ✓ \n\ufffd( tail"
    assert index["options"]["errors"] == "replace"


def test_empty_corpus_and_bad_options(tmp_path, bpe_dir):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_text('{"text": ""}\n\n{"text": ""}\n')
    corpus = LocalCorpus((str(tmp_path / "c" / "*.jsonl"),))
    with pytest.raises(ValueError, match="has no tokens"):
        prepare(corpus, tmp_path / "out", bpe_dir, progress=False)
    assert not (tmp_path / "out" / INDEX_NAME).exists()
    with pytest.raises(ValueError, match="val_every must be an int >= 0"):
        prepare(corpus, tmp_path / "out", bpe_dir, val_every=-1)
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        prepare(corpus, tmp_path / "out", bpe_dir, workers=0)
    with pytest.raises(ValueError, match="tokenizer path .* does not exist"):
        prepare(corpus, tmp_path / "out", tmp_path / "missing.json")


def test_validation_rule_is_a_stable_hash():
    held = [i for i in range(1000) if is_validation("part0.jsonl", i, 10)]
    assert 60 < len(held) < 140  # about one in ten
    assert held == [i for i in range(1000) if is_validation("part0.jsonl", i, 10)]
    assert held != [i for i in range(1000) if is_validation("part1.jsonl", i, 10)]
    assert not any(is_validation("part0.jsonl", i, 0) for i in range(100))


def test_command_line(tmp_path, write_corpus, bpe_dir, capsys):
    write_corpus(tmp_path / "corpus")
    argv = [
        str(tmp_path / "corpus" / "*.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--tokenizer",
        bpe_dir,
        "--val-every",
        "4",
        "--workers",
        "1",
        "--no-progress",
        "--eos-id",
        "none",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    index = read_index(tmp_path / "out")
    assert f"train: {index['splits']['train']['documents']} documents" in printed
    assert index["tokenizer"]["eos_id"] is None and index["tokenizer"]["bos_id"] == 1
    assert index["options"]["val_every"] == 4 and index["options"]["text_field"] == "text"
    assert np.load(tmp_path / "out" / index["shards"][0]["train"]["lengths"]).dtype == np.int64
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--tokenizer", "byte"])  # no source
