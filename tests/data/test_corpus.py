"""Tests for memarch.data.corpus: how configs find their local text corpus."""

from __future__ import annotations

from memarch.data.corpus import ENV_VAR, SHARED_CORPUS, find_corpus


def test_environment_variable_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "/some/corpus.txt")
    assert find_corpus(tmp_path / "configs" / "x.py") == "/some/corpus.txt"


def test_shared_corpus_found_in_a_parent_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    corpus = tmp_path / SHARED_CORPUS
    corpus.parent.mkdir(parents=True)
    corpus.write_text("to be or not to be")
    start = tmp_path / "repo" / "configs" / "x.py"
    assert find_corpus(start) == str(corpus)


def test_nothing_found_is_empty(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert find_corpus(tmp_path / "a" / "b.py") == ""
