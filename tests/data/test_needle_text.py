"""Needle in a haystack on text (memarch.data.needle_text): the families' needles and answers,
depth placement, lengths in tokens, determinism, haystack loading and every bad input."""

import json
import re

import numpy as np
import pytest

from memarch.data.documents import LocalCorpus
from memarch.data.needle_text import (
    DEFAULT_KEYS,
    FAMILIES,
    Haystack,
    TextNeedleConfig,
    answer_text,
    load_haystack,
    needle_example,
    query_text,
    write_needle_corpus,
)
from memarch.data.prepare import prepare
from memarch.data.tokenizers import ByteTokenizer, load_tokenizer

PROSE = (
    "The old lighthouse stood on a rock at the end of the harbour wall. Every evening the "
    "keeper climbed the narrow stairs, wound the clockwork and lit the lamp. In 1887 the wind "
    "came off the sea so hard that the glass hummed! Ships passed far out in the dark, and he "
    "counted their lights as they went by. His sister lived in the village below, where she "
    "kept a shop that sold rope, lamp oil, bread and thread. She visited him on Sundays with a "
    'basket of apples. "Why do you stay?" she asked. He never answered her, and she walked '
    "back across the sand at low tide."
)
TOK = ByteTokenizer()
SHORT = dict(
    preamble="",
    needle_template="{key} is {value}.",
    question_template="\nWhat is {query}? It is",
    insert_at="word",
)


@pytest.fixture(scope="module")
def hay():
    return Haystack.from_texts([PROSE])


def context_of(config, ex):
    """The text between the preamble and the question."""
    question = config.question_template.format(query=query_text(ex.queries))
    assert ex.prompt.startswith(config.preamble) and ex.prompt.endswith(question)
    return ex.prompt[len(config.preamble) : len(ex.prompt) - len(question)]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_hides_its_needles_and_asks_for_the_right_values(family, hay):
    # Given the family's default counts (RULER's niah_* settings)
    config = TextNeedleConfig(family=family)
    k, v, q = config.num_keys, config.num_values, config.num_queries
    ex = needle_example(config, hay, TOK, length=700, depth=40, seed=3, index=5)
    # Then the prompt holds K·V needle sentences, each once, with distinct 7-digit values
    assert len(ex.needles) == k * v
    for n in ex.needles:
        assert n.text == config.needle_template.format(key=n.key, value=n.value)
        assert ex.prompt.count(n.text) == 1
        assert re.fullmatch(r"[1-9]\d{6}", n.value)
    assert len({n.value for n in ex.needles}) == k * v
    assert len({n.key for n in ex.needles}) == k
    # and the answers are the values of the Q asked keys, in the asked order
    assert len(ex.queries) == q and len(set(ex.queries)) == q
    expected = [n.value for key in ex.queries for n in ex.needles if n.key == key]
    assert sorted(ex.answers) == sorted(expected) and len(ex.answers) == q * v
    assert [next(n.key for n in ex.needles if n.value == a) for a in ex.answers[::v]] == list(
        ex.queries
    )
    # the question names them as RULER joins them, and the haystack holds no digit
    assert ex.prompt.endswith(config.question_template.format(query=query_text(ex.queries)))
    context = context_of(config, ex)
    for n in ex.needles:
        context = context.replace(n.text, "")
    assert not re.search(r"\d", context)
    assert ex.completion == " " + ", ".join(ex.answers)
    assert ex.text == ex.prompt + ex.completion + "\n"


def test_family_structure_distractors_values_and_queries(hay):
    mk = needle_example(
        TextNeedleConfig("multikey"), hay, TOK, length=700, depth=0, seed=0, index=0
    )
    asked = mk.queries[0]
    assert [n.key for n in mk.needles].count(asked) == 1  # 3 distractors with other keys
    mv = needle_example(
        TextNeedleConfig("multivalue"), hay, TOK, length=700, depth=0, seed=0, index=0
    )
    assert {n.key for n in mv.needles} == set(mv.queries) and len(mv.answers) == 4
    mq = TextNeedleConfig("multiquery", num_keys=5, num_queries=3)
    ex = needle_example(mq, hay, TOK, length=800, depth=0, seed=0, index=0)
    assert len(ex.needles) == 5 and len(ex.answers) == 3
    a, b, c = ex.queries
    assert f"for {a}, {b}, and {c} mentioned" in ex.prompt
    assert query_text(["x"]) == "x" and query_text(["x", "y"]) == "x, and y"
    assert answer_text(["1", "22"]) == " 1, 22" and answer_text(["1"], "=") == "=1"
    glued = needle_example(
        TextNeedleConfig(answer_prefix=""), hay, TOK, length=500, depth=0, seed=0, index=0
    )
    assert glued.completion == glued.answers[0] and glued.text.endswith(glued.answers[0] + "\n")


@pytest.mark.parametrize("depth", [0, 10, 33.3, 50, 87.5, 100])
def test_the_needle_block_sits_at_the_word_boundary_nearest_the_depth(depth, hay):
    config = TextNeedleConfig("multikey", num_keys=3, **SHORT)
    ex = needle_example(config, hay, TOK, length=300, depth=depth, seed=1, index=2)
    context = context_of(config, ex)
    block = " ".join(n.text for n in ex.needles)
    assert block in context  # one block, the needles adjacent
    before, after = context.split(block)
    words_before, words_after = before.split(), after.split()
    words = words_before + words_after
    # boundary b = words before the block; each word counts len(" " + word) byte tokens
    cum = np.concatenate([[0], np.cumsum([len((" " + w).encode()) for w in words])])
    target = depth / 100 * cum[-1]
    assert len(words_before) == int(np.argmin(np.abs(cum - target)))
    # 0 % and 100 %: right after the preamble / right before the question
    if depth == 0:
        assert context.startswith(block)
    if depth == 100:
        assert context.endswith(block)
    # the measured depth is exact: tokens of the haystack before it / all haystack tokens
    hay_before = len(TOK.encode(" ".join(words_before)))
    measured = 100 * hay_before / len(TOK.encode(" ".join(words)))
    assert all(n.depth == pytest.approx(measured) for n in ex.needles)
    assert abs(measured - depth) <= 100 * max(len(w) + 1 for w in words) / 2 / cum[-1] + 1e-9


def test_sentence_mode_inserts_only_after_a_sentence_end(hay):
    config = TextNeedleConfig(**{**SHORT, "insert_at": "sentence"})
    for depth in (10, 30, 50, 70, 90):
        ex = needle_example(config, hay, TOK, length=400, depth=depth, seed=0, index=1)
        before = context_of(config, ex).split(ex.needles[0].text)[0].split()
        assert not before or re.search(r"[.!?][\"')\]]*$", before[-1]), before[-1:]


def test_random_depths_spread_needles_and_report_each_depth(hay):
    config = TextNeedleConfig("multiquery", num_keys=4, num_queries=2, **SHORT)
    depths = set()
    for i in range(5):
        ex = needle_example(config, hay, TOK, length=400, depth=None, seed=0, index=i)
        got = [n.depth for n in ex.needles]
        assert got == sorted(got) and all(0 <= d <= 100 for d in got)  # prompt order
        depths.update(round(d) for d in got)
    assert len(depths) >= 10


def test_examples_are_a_pure_function_of_seed_and_index(hay):
    config = TextNeedleConfig("multikey", **SHORT)
    a = needle_example(config, hay, TOK, length=200, depth=50, seed=7, index=3)
    assert a == needle_example(config, hay, TOK, length=200, depth=50, seed=7, index=3)
    assert (
        a.prompt != needle_example(config, hay, TOK, length=200, depth=50, seed=7, index=4).prompt
    )
    assert (
        a.prompt != needle_example(config, hay, TOK, length=200, depth=50, seed=8, index=3).prompt
    )
    # the same (seed, index) asks the same needles at every length and depth
    b = needle_example(config, hay, TOK, length=300, depth=0, seed=7, index=3)
    assert a.answers == b.answers and {n.text for n in a.needles} == {n.text for n in b.needles}


@pytest.mark.parametrize("tokenizer", ["byte", "bpe", "sp"])
@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_length_is_within_the_tolerance(tokenizer, family, hay, bpe_dir, sp_model):
    tok = {"byte": TOK, "bpe": None, "sp": None}[tokenizer] or load_tokenizer(
        bpe_dir if tokenizer == "bpe" else sp_model
    )
    config = TextNeedleConfig(family)
    for length in (900, 1337, 2048):
        ex = needle_example(config, hay, tok, length=length, depth=60, seed=0, index=length)
        n = len(tok.encode(ex.prompt))
        assert ex.num_tokens == n and ex.length == length
        assert length - config.length_tolerance <= n <= length, (length, n)


def test_a_gap_beyond_the_tolerance_is_filled_with_part_of_a_word(hay):
    # byte tokens: a prefix of k characters costs k + 1 tokens (with its space), so every gap
    # but 1 can be closed exactly
    config = TextNeedleConfig(**{**SHORT, "length_tolerance": 1})
    gaps, partial = set(), 0
    for length in range(90, 140):
        ex = needle_example(config, hay, TOK, length=length, depth=30, seed=0, index=length)
        gaps.add(length - len(TOK.encode(ex.prompt)))
        last = context_of(config, ex).split()[-1]
        partial += last not in hay.words and last != ex.needles[0].text.split()[-1]
    assert gaps == {0, 1} and partial > 0


def test_a_short_haystack_is_read_cyclically():
    config = TextNeedleConfig(**SHORT)
    ex = needle_example(
        config, Haystack(("sun", "moon.")), TOK, length=200, depth=50, seed=0, index=0
    )
    context = context_of(config, ex).replace(ex.needles[0].text, "").split()
    assert len(context) > 20 and set(context) == {"sun", "moon."}
    assert 200 - config.length_tolerance <= ex.num_tokens <= 200


def test_haystack_digits_are_stripped_keeping_sentence_ends():
    h = Haystack.from_texts(["It was 1887. Room 4b and page 12 of 30", "x 99!"])
    assert h.words == ("It", "was.", "Room", "b", "and", "page", "of", "x!")
    assert Haystack.from_texts(["page 12"], strip_digits=False).words == ("page", "12")
    assert Haystack.from_texts(["a b c d"], max_words=2).words == ("a", "b")


def test_load_haystack_from_texts_files_and_a_prepared_directory(tmp_path):
    docs = ["first doc has words", "second one here", "third and last"]
    (tmp_path / "a.txt").write_text("\n\n".join(docs))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    words = tuple(" ".join(docs).split())
    assert load_haystack(docs).words == words
    assert load_haystack(str(tmp_path / "a.txt")).words == words
    assert load_haystack(tmp_path / "b.jsonl", text_field="body").words == words
    h = Haystack(("x",))
    assert load_haystack(h) is h
    # a prepared directory: its validation documents, decoded with the tokenizer
    many = [f"doc number {i} says hello" for i in range(20)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in many))
    prepare(LocalCorpus((str(tmp_path / "c.jsonl"),)), tmp_path / "prep", TOK, val_every=4,
            progress=False)  # fmt: skip
    val = load_haystack(tmp_path / "prep", tokenizer=TOK)
    train = load_haystack(tmp_path / "prep", tokenizer=TOK, split="train")
    assert 0 < len(val) < len(train) and set(val.words) <= {"doc", "number", "says", "hello"}
    assert len(val) + len(train) == 4 * len(many)


def test_write_needle_corpus_writes_prompt_answer_lines(tmp_path, hay):
    config = TextNeedleConfig("multivalue", num_values=2, **SHORT)
    path = write_needle_corpus(
        tmp_path / "n.jsonl", config, hay, TOK, lengths=(100, 150), depths=(0, 100),
        num_examples=6, seed=4,
    )  # fmt: skip
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["length"] for r in rows] == [100, 150] * 3
    assert [r["depth"] for r in rows] == [0, 0, 100, 100, 0, 0]
    for i, r in enumerate(rows):
        ex = needle_example(config, hay, TOK, length=r["length"], depth=r["depth"], seed=4, index=i)
        assert r["text"] == ex.prompt + " " + ", ".join(ex.answers) + "\n"
        assert r["answers"] == list(ex.answers)
    assert not list(tmp_path.glob("*.tmp"))
    # drawn depths, and the file reads as a LocalCorpus (one document per line)
    path = write_needle_corpus(
        tmp_path / "m.jsonl", config, hay, TOK, lengths=[120], num_examples=3, seed=0
    )
    assert [json.loads(x)["depth"] for x in path.read_text().splitlines()] == [None] * 3


CONFIG_ERRORS = [
    (dict(family="dual"), "family must be one of"),
    (dict(num_keys=2), "family 'single' needs"),
    (dict(family="multikey", num_keys=1), "family 'multikey' needs"),
    (dict(family="multikey", num_values=2), "family 'multikey' needs"),
    (dict(family="multivalue", num_values=1), "family 'multivalue' needs"),
    (dict(family="multivalue", num_keys=2), "family 'multivalue' needs"),
    (dict(family="multiquery", num_queries=1), "family 'multiquery' needs"),
    (dict(family="multiquery", num_keys=2, num_queries=3), "family 'multiquery' needs"),
    (dict(family="multiquery", num_values=2), "family 'multiquery' needs"),
    (dict(num_keys=0), "num_keys must be an int >= 1"),
    (dict(num_values=True), "num_values must be an int >= 1"),
    (dict(num_queries=1.0), "num_queries must be an int >= 1"),
    (dict(value_digits=0), "value_digits must be an int in"),
    (dict(value_digits=19), "value_digits must be an int in"),
    (dict(value_digits=True), "value_digits must be an int in"),
    (dict(family="multikey", num_keys=10, value_digits=1), "fewer than the 10 needles"),
    (dict(keys="cat"), "keys must be a sequence of words"),
    (dict(keys=("cat", "big dog")), r"keys\[1\] is 'big dog'"),
    (dict(keys=("cat", "r2d2")), r"keys\[1\] is 'r2d2'"),
    (dict(keys=("",)), r"keys\[0\] is ''"),
    (dict(keys=("cat", 3)), r"keys\[1\] is 3"),
    (dict(keys=("cat", "cat")), r"keys must be distinct; repeated: \['cat'\]"),
    (dict(family="multikey", keys=("cat",)), "keys must hold at least num_keys=4"),
    (dict(needle_template="{key} only"), "needle_template must contain {key}, {value}"),
    (dict(needle_template="{key} {value} {other}"), "needle_template must contain"),
    (dict(needle_template="{key} {value} {"), "needle_template is not a valid format string"),
    (dict(needle_template=None), "needle_template must be a str"),
    (dict(question_template="what?"), r"question_template must contain \{query\}"),
    (dict(preamble="Hi {name}\n"), "preamble must contain no {field}"),
    (dict(insert_at="char"), "insert_at must be one of"),
    (dict(answer_prefix="#1 "), "answer_prefix must be a str without digits"),
    (dict(answer_prefix=None), "answer_prefix must be a str without digits"),
    (dict(length_tolerance=-1), "length_tolerance must be an int >= 0"),
]


@pytest.mark.parametrize("kwargs,message", CONFIG_ERRORS)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TextNeedleConfig(**kwargs)


def test_default_config_resolves_family_counts():
    assert (TextNeedleConfig().num_keys, TextNeedleConfig().num_needles) == (1, 1)
    mq = TextNeedleConfig("multiquery")
    assert (mq.num_keys, mq.num_values, mq.num_queries, mq.num_answers) == (4, 1, 4, 4)
    assert TextNeedleConfig(keys=["a", "b"]).keys == ("a", "b") and len(DEFAULT_KEYS) >= 16


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(length=0), "length must be an int >= 1"),
        (dict(length=100.0), "length must be an int >= 1"),
        (dict(length=20), r"length=20 tokens is shorter than the preamble, needles and question"),
        (dict(depth=101), r"depth must be None \(drawn\) or a number in \[0, 100\]"),
        (dict(depth=-1), "depth must be None"),
        (dict(depth=float("nan")), "depth must be None"),
        (dict(depth=True), "depth must be None"),
        (dict(seed=-1), "seed must be an int >= 0"),
        (dict(index=-2), "index must be an int >= 0"),
        (dict(haystack=["a", "b"]), "haystack must be a Haystack"),
        (dict(tokenizer="byte"), "tokenizer must have encode"),
    ],
)
def test_example_errors(kwargs, message, hay):
    args = dict(config=TextNeedleConfig(**SHORT), haystack=hay, tokenizer=TOK, length=100,
                depth=50, seed=0, index=0) | kwargs  # fmt: skip
    with pytest.raises(ValueError, match=message):
        needle_example(args.pop("config"), args.pop("haystack"), args.pop("tokenizer"), **args)


def test_a_tokenizer_that_cannot_meet_the_tolerance_is_an_error(hay):
    class Coarse:  # 3 tokens per 16 characters: only multiples of 3 are reachable
        def encode(self, text):
            return [0] * (3 * (len(text) // 16))

        def encode_batch(self, texts):
            return [self.encode(t) for t in texts]

    config = TextNeedleConfig(**{**SHORT, "length_tolerance": 0})
    assert (
        needle_example(config, hay, Coarse(), length=21, depth=50, seed=0, index=0).num_tokens == 21
    )
    with pytest.raises(
        ValueError, match=r"within length_tolerance=0 with this tokenizer \(best: 18 tokens\)"
    ):
        needle_example(config, hay, Coarse(), length=20, depth=50, seed=0, index=0)


def test_haystack_and_corpus_errors(tmp_path, hay):
    with pytest.raises(ValueError, match="at least one word"):
        Haystack(())
    with pytest.raises(ValueError, match="at least one word"):
        Haystack.from_texts(["123 456"])
    with pytest.raises(ValueError, match="word 1 is 'a b'"):
        Haystack(("x", "a b"))
    with pytest.raises(ValueError, match="text 0 is int"):
        Haystack.from_texts([3])
    with pytest.raises(ValueError, match="strip_digits must be a bool"):
        Haystack.from_texts(["a"], strip_digits=1)
    with pytest.raises(ValueError, match="max_words must be an int >= 1"):
        Haystack.from_texts(["a"], max_words=0)
    with pytest.raises(ValueError, match="directory without index.json"):
        load_haystack(tmp_path)
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "index.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer must be given"):
        load_haystack(tmp_path / "prep")
    with pytest.raises(ValueError, match="matches no file"):
        load_haystack(tmp_path / "none" / "*.txt")
    with pytest.raises(ValueError, match="haystack source must be"):
        load_haystack(42)
    config = TextNeedleConfig(**SHORT)
    common = dict(config=config, haystack=hay, tokenizer=TOK, num_examples=2, seed=0)
    for kwargs, message in [
        (dict(path=tmp_path / "x.txt", lengths=[100]), "path must end in .jsonl"),
        (dict(path=tmp_path / "x.jsonl", lengths=[]), "lengths must be a non-empty sequence"),
        (dict(path=tmp_path / "x.jsonl", lengths=[0]), r"lengths\[i\] must be an int >= 1"),
        (dict(path=tmp_path / "x.jsonl", lengths=[100], depths=[120]), "depth must be None"),
        (dict(path=tmp_path / "x.jsonl", lengths=[100], num_examples=0), "num_examples must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            write_needle_corpus(**(common | kwargs))
