"""Task ``text`` (memarch.data.text): the byte tokenizer, local files prepared on first use and
keyed by content, training rows over every epoch, held-out rows and bytes per target."""

import dataclasses
import json
import math

import numpy as np
import pytest

from memarch.data.byte_tokenizer import BOS_ID, VOCAB_SIZE, decode, encode
from memarch.data.config import DataConfig
from memarch.data.pipeline import text_eval_batches, train_examples
from memarch.data.prepare import prepare
from memarch.data.text import (
    bytes_per_target,
    cache_dir,
    check_text_data,
    eval_rows,
    local_corpus,
    prepared_dir,
    text_tokenizer,
    train_rows,
)
from memarch.data.tokenizers import load_tokenizer


def test_byte_tokenizer_round_trips():
    text = "Gödel's\nproof — ✓"
    ids = encode(text)
    assert ids[0] == BOS_ID and ids.max() < VOCAB_SIZE and ids.dtype == np.int32
    assert decode(ids) == text


def _paragraphs(tag: str, n: int = 80) -> str:
    return "\n\n".join(f"{tag} paragraph {i}: " + "to be or not " * (i % 7) for i in range(n))


def _cfg(tmp_path, text_file, **kw) -> DataConfig:
    base = dict(
        task="text",
        vocab_size=VOCAB_SIZE,
        text_file=str(text_file),
        data_dir=str(tmp_path / "cache"),
        text_val_every=5,
        seq_len=16,
        num_eval_examples=6,
    )
    return DataConfig(**{**base, **kw})


def test_text_file_is_prepared_once_and_keyed_by_content(tmp_path):
    # Given two different files with the same name (the failure of a name-keyed cache)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    (tmp_path / "a" / "corpus.txt").write_text(_paragraphs("alpha", 80))
    (tmp_path / "b" / "corpus.txt").write_text(_paragraphs("beta", 30))
    cfg_a = _cfg(tmp_path, tmp_path / "a" / "corpus.txt")
    cfg_b = _cfg(tmp_path, tmp_path / "b" / "corpus.txt")
    dir_a, dir_b = prepared_dir(cfg_a), prepared_dir(cfg_b)
    # Then each is prepared into its own directory and serves its own documents
    assert dir_a != dir_b and dir_a == cache_dir(cfg_a, text_tokenizer(cfg_a))
    docs = lambda cfg: sum(
        json.loads((prepared_dir(cfg) / "index.json").read_text())["splits"][s]["documents"]
        for s in ("train", "validation")
    )
    assert docs(cfg_a) == 80 and docs(cfg_b) == 30
    assert "beta" in decode(train_rows(cfg_b)[0]["inputs"])
    # When a file is edited, the next use rebuilds it (never the stale shards)
    (tmp_path / "b" / "corpus.txt").write_text(_paragraphs("gamma", 40))
    assert prepared_dir(cfg_b) == dir_b and docs(cfg_b) == 40
    text = "".join(decode(train_rows(cfg_b)[i]["inputs"]) for i in range(20))
    assert "gamma" in text and "beta" not in text
    # And another tokenizer or validation rule is another directory
    assert cache_dir(dataclasses.replace(cfg_a, text_val_every=7), text_tokenizer(cfg_a)) != dir_a
    assert cache_dir(cfg_a, load_tokenizer("byte", bos_id=None)) != dir_a


def test_training_rows_cover_every_epoch_in_a_new_order(tmp_path):
    (tmp_path / "c.txt").write_text(_paragraphs("x", 60))
    cfg = _cfg(tmp_path, tmp_path / "c.txt")
    rows = train_rows(cfg)
    per_epoch = len(rows.rows)
    examples = train_examples(cfg)
    # element i of the training dataset is row i of the endless stream, a pure function of i
    for i in (0, 3, per_epoch - 1, per_epoch, per_epoch + 5):
        for key in ("inputs", "targets", "segment_ids"):
            np.testing.assert_array_equal(examples[i][key], rows[i][key])
    # epoch 1 holds the same tokens as epoch 0, in another document order
    epoch = lambda e: np.concatenate([rows[e * per_epoch + r]["inputs"] for r in range(per_epoch)])
    e0, e1 = epoch(0), epoch(1)
    assert len(e0) == len(e1) and not np.array_equal(e0, e1)
    docs = len(rows.rows.split)  # every document starts once per epoch (but a cut-off last one)
    assert docs - 1 <= (e0 == BOS_ID).sum() <= docs and docs - 1 <= (e1 == BOS_ID).sum() <= docs
    # a different seed is a different order
    other = train_rows(dataclasses.replace(cfg, seed=1))
    assert not np.array_equal(other[0]["inputs"], rows[0]["inputs"])


def test_held_out_rows_and_bytes_per_target(tmp_path):
    (tmp_path / "c.txt").write_text(_paragraphs("held", 120) + "\n\nnaïve café 東京 😀")
    cfg = _cfg(tmp_path, tmp_path / "c.txt", num_eval_examples=4)
    rows, n = eval_rows(cfg)
    assert n == 4 and rows.split.split == "validation" and rows.seed == cfg.eval_seed
    batches = list(text_eval_batches(cfg, batch_size=3))
    assert [b["inputs"].shape for b in batches] == [(3, 16), (1, 16)]
    np.testing.assert_array_equal(batches[1]["targets"][0], rows[3]["targets"])
    # byte tokenizer with BOS: every byte of a document is exactly one target
    assert bytes_per_target(cfg, rows) == 1.0
    # with EOS too, each document has one more target and no more bytes
    index = json.loads((rows.split.directory / "index.json").read_text())["splits"]["validation"]
    want = index["text_bytes"] / (index["tokens"] + index["documents"])
    assert math.isclose(bytes_per_target(dataclasses.replace(cfg, add_eos=True), rows), want)
    assert want < 1 and index["text_bytes"] > index["tokens"] - index["documents"]  # UTF-8


def test_text_data_errors_name_the_field(tmp_path, bpe_dir):
    (tmp_path / "c.txt").write_text(_paragraphs("err", 80))
    cfg = _cfg(tmp_path, tmp_path / "c.txt")
    check_text_data(cfg, model_vocab_size=384)  # the byte tokenizer's 258 ids, padded
    with pytest.raises(ValueError, match="exactly one of data.text_dir .* and data.text_file"):
        check_text_data(dataclasses.replace(cfg, text_dir=str(tmp_path)), 384)
    with pytest.raises(ValueError, match="exactly one of"):
        check_text_data(dataclasses.replace(cfg, text_file=""), 384)
    with pytest.raises(ValueError, match=r"data.tokenizer: tokenizer path .*nope.* does not exist"):
        check_text_data(dataclasses.replace(cfg, tokenizer=str(tmp_path / "nope")), 384)
    with pytest.raises(ValueError, match="data.vocab_size must be the tokenizer's id count 400"):
        check_text_data(dataclasses.replace(cfg, tokenizer=bpe_dir), 512)
    with pytest.raises(ValueError, match=r"model.vocab_size=256 is smaller .*\(258 ids\)"):
        check_text_data(cfg, 256)
    with pytest.raises(ValueError, match="matches no file"):
        check_text_data(dataclasses.replace(cfg, text_file=str(tmp_path / "none.txt")), 384)
    with pytest.raises(ValueError, match="holds no prepared data"):
        check_text_data(dataclasses.replace(cfg, text_file="", text_dir=str(tmp_path)), 384)
    # shards written with another tokenizer are refused
    other = tmp_path / "bpe_shards"
    prepare(local_corpus(cfg), other, bpe_dir, val_every=10, progress=False)
    refused = dataclasses.replace(cfg, text_file="", text_dir=str(other))
    with pytest.raises(ValueError, match="was prepared with tokenizer HFTokenizer"):
        check_text_data(refused, 384)
    # a split shorter than a row
    (tmp_path / "short.txt").write_text("one\n\ntwo")
    short = _cfg(tmp_path, tmp_path / "short.txt", text_val_every=0)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        check_text_data(short, 384)
    (tmp_path / "long.txt").write_text(_paragraphs("long", 80))
    no_val = _cfg(tmp_path, tmp_path / "long.txt", text_val_every=0)
    with pytest.raises(ValueError, match="validation split .* 0 tokens.* hold out more"):
        check_text_data(no_val, 384)
