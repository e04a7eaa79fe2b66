"""Byte tokenizer, the TFDS ArrayRecord builder for local text, and packed text rows."""

from pathlib import Path

import numpy as np
import pytest

from memarch.data.byte_tokenizer import BOS_ID, VOCAB_SIZE, decode, encode
from memarch.data.mqar import IGNORE_INDEX
from memarch.data.text import PackedText, prepare

SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"
for _parent in Path(__file__).resolve().parents:
    if (_parent / "shared" / "data" / "tinyshakespeare.txt").is_file():
        SHAKESPEARE = _parent / "shared" / "data" / "tinyshakespeare.txt"
        break


def test_byte_tokenizer_round_trips():
    text = "Gödel's\nproof — ✓"
    ids = encode(text)
    assert ids[0] == BOS_ID and ids.max() < VOCAB_SIZE and ids.dtype == np.int32
    assert decode(ids) == text


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    paragraphs = [f"paragraph {i}: " + "ab" * (i % 7) for i in range(60)]
    (tmp / "corpus.txt").write_text("\n\n".join(paragraphs))
    return prepare(tmp / "corpus.txt", tmp / "tfds"), paragraphs


def test_builder_splits_paragraphs(sources):
    src, paragraphs = sources
    train, val = src["train"], src["validation"]
    assert len(train) == 57 and len(val) == 3  # every 20th paragraph is held out
    texts = {train[i]["text"].decode() for i in range(len(train))}
    texts |= {val[i]["text"].decode() for i in range(len(val))}
    assert texts == set(paragraphs)


def test_packed_rows_cover_the_stream_with_segments(sources):
    src, _ = sources
    packed = PackedText(src["train"], seq_len=16, seed=3)
    stream = np.concatenate([packed._tokens(j) for j in range(len(src["train"]))])
    assert len(packed) == (len(stream) - 1) // 16
    for i in (0, 1, len(packed) - 1):
        row = packed[i]
        np.testing.assert_array_equal(row["inputs"], stream[i * 16 : i * 16 + 16])
        seg = row["segment_ids"]
        assert seg[0] == 1 and np.all(np.diff(seg) >= 0)
        # a target is the next token of the same document, else ignored
        nxt = stream[i * 16 + 1 : i * 16 + 17]
        boundary = nxt == BOS_ID
        np.testing.assert_array_equal(row["targets"][~boundary], nxt[~boundary])
        assert np.all(row["targets"][boundary] == IGNORE_INDEX)
        np.testing.assert_array_equal(seg[1:] != seg[:-1], row["inputs"][1:] == BOS_ID)
    again = PackedText(src["train"], seq_len=16, seed=3)[1]
    np.testing.assert_array_equal(again["inputs"], packed[1]["inputs"])


def test_tinyshakespeare_through_tfds_data_source(tmp_path):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} is absent (the small corpus of ../shared/data)")
    src = prepare(SHAKESPEARE, tmp_path)
    packed = PackedText(src["train"], seq_len=32, seed=0)
    assert len(src["train"]) > 1000 and len(packed) > 1000
    assert decode(packed[5]["inputs"]).strip()
