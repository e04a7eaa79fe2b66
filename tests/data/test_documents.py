"""memarch.data.documents: local .txt/.jsonl/.parquet corpora and local TFDS datasets."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

from memarch.data.documents import LocalCorpus, TFDSCorpus, read_unit


def documents(corpus) -> list[tuple[str, int, str]]:
    return [(u.key, i, t) for u in corpus.units() for i, t in read_unit(u, corpus)]


def test_txt_one_document_per_file_or_per_paragraph(tmp_path):
    (tmp_path / "a.txt").write_text("first para\n\nsecond para\n\n\n   \n\nthird")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("only one")
    whole = LocalCorpus((str(tmp_path / "**" / "*.txt"),))
    assert documents(whole) == [
        ("a.txt", 0, "first para\n\nsecond para\n\n\n   \n\nthird"),
        ("sub/b.txt", 0, "only one"),
    ]
    paragraphs = LocalCorpus((str(tmp_path / "*.txt"),), txt_mode="paragraph")
    assert documents(paragraphs) == [
        ("a.txt", 0, "first para"),
        ("a.txt", 1, "second para"),
        ("a.txt", 2, "third"),
    ]


def test_jsonl_and_parquet_text_fields(tmp_path):
    lines = [{"text": "one", "id": 1}, {"text": "two ✓"}]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    pq.write_table(pa.table({"body": ["p0", "p1 東京", None]}), tmp_path / "y.parquet")
    assert documents(LocalCorpus((str(tmp_path / "*.jsonl"),))) == [
        ("x.jsonl", 0, "one"),
        ("x.jsonl", 1, "two ✓"),
    ]
    assert documents(LocalCorpus((str(tmp_path / "*.parquet"),), text_field="body")) == [
        ("y.parquet", 0, "p0"),
        ("y.parquet", 1, "p1 東京"),
        ("y.parquet", 2, ""),
    ]


def test_missing_text_field_names_file_and_field(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"body": 1}))
    pq.write_table(pa.table({"body": ["p0"]}), tmp_path / "y.parquet")
    with pytest.raises(ValueError, match=r"x\.jsonl line 2: no text field 'text'"):
        documents(LocalCorpus((str(tmp_path / "*.jsonl"),)))
    with pytest.raises(ValueError, match=r"y\.parquet: no text field 'text' \(columns: \['body'\]"):
        documents(LocalCorpus((str(tmp_path / "*.parquet"),)))


def test_non_utf8_names_file_and_offset_or_is_replaced(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"good text\n\nthen \xff\xfe bad")
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "x\xc3"}\n')
    with pytest.raises(ValueError, match=r"bad\.txt: invalid UTF-8 at byte offset 16"):
        documents(LocalCorpus((str(tmp_path / "*.txt"),)))
    with pytest.raises(ValueError, match=r"bad\.jsonl: invalid UTF-8 at byte offset 26"):
        documents(LocalCorpus((str(tmp_path / "*.jsonl"),)))
    replaced = LocalCorpus((str(tmp_path / "*.txt"),), txt_mode="paragraph", errors="replace")
    assert [t for _, _, t in documents(replaced)] == ["good text", "then \ufffd\ufffd bad"]


def test_bad_corpus_options(tmp_path):
    with pytest.raises(ValueError, match="matches no file"):
        LocalCorpus((str(tmp_path / "*.txt"),)).units()
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(ValueError, match=r"suffix '\.csv'; accepted"):
        LocalCorpus((str(tmp_path / "*"),)).units()
    with pytest.raises(ValueError, match="txt_mode must be one of"):
        LocalCorpus(("x",), txt_mode="line")
    with pytest.raises(ValueError, match="errors must be one of"):
        LocalCorpus(("x",), errors="ignore")


class TinyTextCorpus(tfds.core.GeneratorBasedBuilder):
    """Eleven short documents in feature ``content`` (train) and two (test)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"content": tfds.features.Text(), "label": tfds.features.Scalar(dtype=np.int32)}
            )
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(11), "test": self._generate_examples(2)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"content": f"document {i} — ü", "label": i}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
    data_dir = tmp_path_factory.mktemp("tfds")
    TinyTextCorpus(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return str(data_dir)


def test_tfds_dataset_from_a_local_data_dir(tfds_dir):
    corpus = TFDSCorpus("tiny_text_corpus", tfds_dir, text_field="content", records_per_unit=4)
    units = corpus.units()
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 8), (8, 11)]
    docs = documents(corpus)
    assert sorted(t for _, _, t in docs) == sorted(f"document {i} — ü" for i in range(11))
    assert {k for k, _, _ in docs} == {"tiny_text_corpus/train"}
    assert all(f.startswith(tfds_dir) for f in corpus.files())


def test_tfds_unknown_dataset_missing_feature_or_split(tfds_dir, tmp_path):
    with pytest.raises(ValueError, match="TFDS dataset 'no_such_corpus' is not prepared"):
        TFDSCorpus("no_such_corpus", tfds_dir).units()
    with pytest.raises(ValueError, match=r"no feature text_field='text'; its features: "):
        TFDSCorpus("tiny_text_corpus", tfds_dir).units()
    with pytest.raises(ValueError, match="has no split 'validation'"):
        TFDSCorpus("tiny_text_corpus", tfds_dir, split="validation", text_field="content").units()
    with pytest.raises(ValueError, match="TFDS data_dir .* does not exist"):
        TFDSCorpus("tiny_text_corpus", str(tmp_path / "absent"))
