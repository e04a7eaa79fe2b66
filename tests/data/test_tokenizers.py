"""memarch.data.tokenizers: HF / SentencePiece / byte tokenizers from local paths."""

from __future__ import annotations

import json
import shutil

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer

from memarch.data.tokenizers import (
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    check_vocab,
    load_tokenizer,
    padded_vocab_size,
)

TEXTS = [
    "the gate forgets old facts",
    "Gödel, naïve café: 東京 😀🚀 — ∑∫√ ✓\nsecond line\n\n  two spaces",
    "",
    "unseen words: zyxwvut qqq ĦĦĦ",
]


def test_hf_directory_round_trips_and_matches_the_library(bpe_dir):
    tok = load_tokenizer(bpe_dir)
    lib = Tokenizer.from_file(f"{bpe_dir}/tokenizer.json")
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == 400
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)  # from special_tokens_map.json
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == lib.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]


def test_hf_file_alone_has_no_specials_unless_given(bpe_dir):
    tok = load_tokenizer(f"{bpe_dir}/tokenizer.json")
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, None, None)
    with pytest.raises(ValueError, match="has no EOS token; pass eos_id"):
        tok.special_id("eos")
    given = load_tokenizer(f"{bpe_dir}/tokenizer.json", eos_id=2, bos_id=None)
    assert given.special_id("eos") == 2 and given.bos_id is None


def test_hf_special_token_missing_from_vocab_is_an_error(bpe_dir, tmp_path):
    shutil.copy(f"{bpe_dir}/tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": {"content": "<eot>"}})
    )
    with pytest.raises(ValueError, match="eos_token '<eot>'"):
        load_tokenizer(tmp_path)


def test_sentencepiece_round_trips_and_matches_the_library(sp_model):
    tok = load_tokenizer(sp_model)
    lib = spm.SentencePieceProcessor(model_file=sp_model)
    assert isinstance(tok, SentencePieceTokenizer) and tok.vocab_size == 400
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 3)
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == lib.encode(text)
        assert tok.decode(ids) == text


def test_byte_tokenizer_behind_the_interface():
    tok = load_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer) and tok.vocab_size == 258
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, None)
    assert tok.encode("aé") == [ord("a") + 2, 0xC3 + 2, 0xA9 + 2]
    assert tok.decode(tok.encode(TEXTS[1])) == TEXTS[1]


def test_fingerprint_covers_file_specials_and_class(bpe_dir, sp_model, tmp_path):
    a = load_tokenizer(bpe_dir)
    assert a.fingerprint == load_tokenizer(bpe_dir).fingerprint
    assert (
        a.fingerprint
        == load_tokenizer(f"{bpe_dir}/tokenizer.json", bos_id=1, eos_id=2, pad_id=0).fingerprint
    )
    assert a.fingerprint != load_tokenizer(bpe_dir, eos_id=None).fingerprint
    edited = json.loads(open(f"{bpe_dir}/tokenizer.json").read())
    edited["added_tokens"][0]["content"] = "<PAD>"
    (tmp_path / "tokenizer.json").write_text(json.dumps(edited))
    assert (
        load_tokenizer(tmp_path / "tokenizer.json", bos_id=1, eos_id=2, pad_id=0).fingerprint
        != a.fingerprint
    )
    assert (
        len(
            {
                a.fingerprint,
                load_tokenizer(sp_model).fingerprint,
                load_tokenizer("byte").fingerprint,
            }
        )
        == 3
    )


def test_missing_or_unknown_tokenizer_paths(tmp_path):
    with pytest.raises(ValueError, match="tokenizer path .*nope.json.* does not exist"):
        load_tokenizer(tmp_path / "nope.json")
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="none of the accepted kinds"):
        load_tokenizer(tmp_path / "vocab.txt")
    with pytest.raises(ValueError, match="none of the accepted kinds"):
        load_tokenizer(tmp_path)  # a directory with neither tokenizer.json nor tokenizer.model


def test_bad_special_ids(bpe_dir):
    with pytest.raises(ValueError, match=r"bos_id must be in \[0, vocab_size=400\); got 400"):
        load_tokenizer(bpe_dir, bos_id=400)
    with pytest.raises(ValueError, match="eos_id must be an int or None"):
        load_tokenizer(bpe_dir, eos_id="2")
    with pytest.raises(ValueError, match="special token name must be one of"):
        load_tokenizer(bpe_dir).special_id("cls")


def test_padded_vocab_size_and_check_vocab(bpe_dir):
    assert [padded_vocab_size(n) for n in (1, 128, 129, 50257)] == [128, 128, 256, 50304]
    assert padded_vocab_size(258, multiple=64) == 320
    with pytest.raises(ValueError, match="vocab size must be an int >= 1"):
        padded_vocab_size(0)
    tok = load_tokenizer(bpe_dir)
    check_vocab(400, tok)
    check_vocab(padded_vocab_size(400), tok)
    with pytest.raises(ValueError, match=r"model\.vocab_size=399 .*\(400 ids\)"):
        check_vocab(399, tok)
