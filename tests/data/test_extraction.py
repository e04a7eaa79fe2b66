"""memarch.data.extraction: the six Based/JRT extraction tasks, their release files (.jsonl,
.json, .parquet, directories), prompts read once or several times, cutting to a token budget,
the ``contains`` score, the synthetic corpus and every bad-input error."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memarch.data.extraction import (
    TASKS,
    ExtractionRecord,
    build_prompt,
    contains_score,
    cut_context,
    cut_window,
    get_extraction_task,
    parse_record,
    read_extraction,
    read_release,
    synthetic_records,
    training_text,
    write_extraction_corpus,
)
from memarch.data.tokenizers import ByteTokenizer, load_tokenizer

SWDE = [
    {
        "text": "Title: Up (2009)\nDirector: Pete Docter\n\n",
        "key": "director",
        "value": "Pete Docter",
    },
    {"text": "Genre: drama.\nyear: 1999.\nyear:", "key": "year", "value": " 1999 "},
]


def write_jsonl(path, records, blank_lines: bool = True):
    sep = "\n\n" if blank_lines else "\n"
    path.write_text(sep.join(json.dumps(r) for r in records) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- registry


def test_the_six_tasks_and_their_conventions():
    assert list(TASKS) == ["swde", "fda", "squad", "triviaqa", "nq", "drop"]
    assert TASKS["swde"].release == "hazyresearch/based-swde-v2"
    assert TASKS["fda"].release == "hazyresearch/based-fda"
    assert TASKS["squad"].release == "hazyresearch/based-squad"
    for name in ("swde", "fda"):
        assert TASKS[name].text_fields == ("text", "key", "value") and TASKS[name].cloze_from_key
    for name in ("squad", "triviaqa", "nq", "drop"):
        assert TASKS[name].text_fields == ("text", "value") and not TASKS[name].cloze_from_key
    assert [n for n, t in TASKS.items() if t.qa_layout] == ["triviaqa", "nq", "drop"]
    with pytest.raises(ValueError, match=r"extraction task must be one of \['swde', 'fda'"):
        get_extraction_task("hellaswag")


# ----------------------------------------------------------------------------- reading


def test_reader_reads_every_release_format_alike(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", SWDE)
    (tmp_path / "b.json").write_text(json.dumps(SWDE))
    (tmp_path / "c.json").write_text(json.dumps({"train": [SWDE[0]], "validation": SWDE}))
    pq.write_table(pa.Table.from_pylist(SWDE), tmp_path / "d.parquet")
    want = read_extraction(tmp_path / "a.jsonl", "swde")
    assert [r.labels for r in want] == [("Pete Docter",), ("1999",)]
    for name in ("b.json", "c.json", "d.parquet"):
        got = read_extraction(tmp_path / name, "swde")
        assert [(r.context, r.question, r.labels, r.key) for r in got] == [
            (r.context, r.question, r.labels, r.key) for r in want
        ], name
    train = read_extraction(tmp_path / "c.json", "swde", split="train")
    assert [r.labels for r in train] == [("Pete Docter",)]
    assert read_extraction(tmp_path / "a.jsonl", "swde", limit=1) == want[:1]
    assert read_release(tmp_path / "a.jsonl")[1] == (f"{tmp_path / 'a.jsonl'} record 1", SWDE[1])


def test_reader_reads_a_directory_preferring_the_split(tmp_path):
    # a saved Hugging Face release: data/<split>-…parquet files, plus files of other kinds
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(SWDE), tmp_path / "data" / "validation-00000.parquet")
    pq.write_table(pa.Table.from_pylist(SWDE[:1]), tmp_path / "data" / "train-00000.parquet")
    (tmp_path / "README.md").write_text("# card")
    got = read_extraction(tmp_path, "swde")
    assert [r.labels for r in got] == [("Pete Docter",), ("1999",)]
    assert [r.labels for r in read_extraction(tmp_path, "swde", split="train")] == [
        ("Pete Docter",)
    ]
    # no file names the split: every file, sorted
    flat = tmp_path / "flat"
    flat.mkdir()
    write_jsonl(flat / "b.jsonl", SWDE[1:])
    write_jsonl(flat / "a.jsonl", SWDE[:1])
    assert [r.labels for r in read_extraction(flat, "swde")] == [("Pete Docter",), ("1999",)]


def test_swde_and_fda_cloze_from_the_key():
    swde = parse_record(SWDE[0], "swde")
    assert swde.context == "Title: Up (2009)\nDirector: Pete Docter."
    assert swde.question == "Director:" and swde.key == "director"
    # trailing "key:" copies (any case) and trailing periods/newlines go; one "." is added
    fda = parse_record(
        {"text": "device: X-ray unit..\n\nCode: 12.\nCODE:code:", "key": "code", "value": "12"},
        "fda",
    )
    assert fda.context == "device: X-ray unit..\n\nCode: 12." and fda.question == "Code:"
    # SWDE v2 appends a summary block after the page; it is dropped
    s = parse_record(
        {"text": "page body\nSummary of information above... key: value", "key": "x", "value": "v"},
        "swde",
    )
    assert s.context == "page body." and s.question == "X:"
    assert build_prompt(fda).text == "device: X-ray unit..\n\nCode: 12. Code:"


def test_text_layout_with_the_question_inside_and_the_qa_layout():
    squad = parse_record(
        {"text": "  Paris is in France. Paris is in\n", "value": "France"}, "squad"
    )
    assert (squad.context, squad.question, squad.labels) == (
        "Paris is in France. Paris is in",
        "",
        ("France",),
    )
    assert build_prompt(squad, num_passes=2).text == (
        "Paris is in France. Paris is in\nParis is in France. Paris is in"
    )
    trivia = parse_record(
        {
            "context": "[DOC] [TLE] Everest [PAR] Everest is 8849 m high.. How high is Everest?",
            "question": "How high is Everest?",
            "answers": ["8849 m", "8,849 metres"],
        },
        "triviaqa",
    )
    assert trivia.context == "Everest  Everest is 8849 m high."
    assert trivia.question == "How high is Everest?"
    assert trivia.labels == ("8849 m", "8,849 metres")
    nq = parse_record(
        {"text": "Who wrote Hamlet? Shakespeare wrote", "value": ["Shakespeare"]}, "nq"
    )
    assert nq.labels == ("Shakespeare",) and nq.question == ""


# ----------------------------------------------------------------------------- prompts


def test_num_passes_repeats_the_context_exactly_in_characters_and_tokens():
    tok = ByteTokenizer()
    rec = parse_record(
        {"text": "name: Zoë\nyear: 1987\ncity: 東京\n", "key": "city", "value": "東京"}, "swde"
    )
    one, two, three = (build_prompt(rec, num_passes=p) for p in (1, 2, 3))
    c, q = rec.context, " " + rec.question
    assert one.text == c + q
    assert two.text == c + "\n" + c + q
    assert three.text == "\n".join([c, c, c]) + q
    assert two.text.count(c) == 2 and two.text.count(q) == 1
    ids = tok.encode
    assert ids(two.text) == ids(c) + ids("\n") + ids(c) + ids(q)
    assert ids(two.text)[: len(ids(c))] == ids(two.text)[len(ids(c)) + 1 : 2 * len(ids(c)) + 1]
    assert len(ids(two.text)) == 2 * len(ids(one.text)) - len(ids(q)) + 1
    # JRT's twice-prompts for SWDE/FDA open with the attribute
    intro = build_prompt(rec, num_passes=2, intro=True)
    assert intro.text == "Information about City. " + two.text


def test_cut_window_centres_on_the_answer_and_clamps():
    assert cut_window(10, 20, (3, 5)) == (0, 10)  # fits: everything
    assert cut_window(100, 20, None) == (80, 100)  # no answer: the last tokens
    assert cut_window(100, 20, (50, 54)) == (42, 62)  # centre 52
    assert cut_window(100, 20, (1, 3)) == (0, 20)  # clamped at the start
    assert cut_window(100, 20, (97, 100)) == (80, 100)  # and at the end


@pytest.mark.parametrize("where", [0.0, 0.37, 0.5, 0.93, 1.0])
def test_cutting_keeps_the_answer_inside_the_window(where):
    tok = ByteTokenizer()
    filler = "".join(f"line {i}: nothing here. " for i in range(120))
    at = int(where * len(filler))
    context = filler[:at] + "the code is QX-77. " + filler[at:]
    cut = cut_context(context, ["qx-77"], tok, 200)  # the match ignores case
    assert len(tok.encode(cut)) == 200 and cut in context and "QX-77" in cut
    middle = cut.index("QX-77") + len("QX-77") / 2
    if 100 < context.index("QX-77") < len(context) - 100:  # not clamped: centred
        assert abs(middle - 100) <= 1
    # the budget is per pass: both passes hold the same cut text
    rec = ExtractionRecord(context, "Code:", ("QX-77",), "code")
    two = build_prompt(rec, num_passes=2, tokenizer=tok, context_tokens=200)
    assert two.context == cut and two.text == cut + "\n" + cut + " Code:"
    assert tok.encode(two.text) == tok.encode(cut) + tok.encode("\n") + tok.encode(
        cut
    ) + tok.encode(" Code:")


def test_cutting_without_the_answer_keeps_the_last_tokens_and_a_short_text_whole(bpe_dir):
    tok = ByteTokenizer()
    context = "abcdefghij" * 30
    assert cut_context(context, ["zzz"], tok, 50) == context[-50:]
    assert cut_context("short text", ["zzz"], tok, 50) == "short text"
    # a subword tokenizer: the window is counted in its tokens, the answer stays inside
    bpe = load_tokenizer(bpe_dir)
    words = " ".join(f"the memory of a model {i}" for i in range(200))
    context = words[:900] + " answer Gödel café " + words[900:]
    cut = cut_context(context, ["Gödel café"], bpe, 60)
    assert "Gödel café" in cut and len(bpe.encode(cut)) <= 61
    assert len(bpe.encode(cut)) < len(bpe.encode(context))


# ----------------------------------------------------------------------------- score


def test_contains_is_case_insensitive_literal_and_any_label():
    assert contains_score(" The answer is PETE docter.", ["Pete Docter"]) == 1
    assert contains_score("Pete", ["Pete Docter"]) == 0
    # regex characters are literal: "." is no wildcard, "+" no repetition, "(" no group
    assert contains_score("125", ["1.5"]) == 0 and contains_score("v1.5", ["1.5"]) == 1
    assert contains_score("aab", ["a+b"]) == 0 and contains_score("x a+b", ["a+b"]) == 1
    assert contains_score("f(x) = [1]", ["f(x) = [1]"]) == 1
    assert contains_score("costs $5", ["$5"]) == 1 and contains_score("5", ["$5"]) == 0
    # any label counts; labels are stripped (a padded label still matches at a line end)
    assert contains_score("8,849 metres", ["8849 m", "8,849 metres"]) == 1
    assert contains_score("1999", [" 1999 "]) == 1 and contains_score("1999", " 1999 ") == 1
    assert contains_score("", ["x"]) == 0
    for bad in ([], [""], ["  "], [None]):
        with pytest.raises(ValueError, match="labels must hold at least one non-empty string"):
            contains_score("anything", bad)
    with pytest.raises(ValueError, match="prediction must be a string"):
        contains_score(None, ["x"])


# ----------------------------------------------------------------------------- errors


def test_bad_files_are_one_clear_error(tmp_path):
    def refused(path, match, task="swde", **kw):
        with pytest.raises(ValueError, match=match):
            read_extraction(path, task, **kw)

    refused(tmp_path / "missing.jsonl", "extraction data path .*missing.jsonl' does not exist")
    (tmp_path / "x.csv").write_text("text,value\n")
    refused(
        tmp_path / "x.csv", r"has suffix '\.csv'; accepted: \['\.jsonl', '\.json', '\.parquet'\]"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    refused(empty, "extraction directory .* holds no .jsonl/.json/.parquet file")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    refused(tmp_path / "blank.jsonl", "blank.jsonl' holds no records")
    (tmp_path / "none.json").write_text("[]")
    refused(tmp_path / "none.json", "none.json' holds no records")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "none.parquet")
    refused(tmp_path / "none.parquet", "none.parquet' holds no records")
    (tmp_path / "bad.parquet").write_text("not parquet")
    refused(tmp_path / "bad.parquet", "bad.parquet: not a readable parquet file")
    (tmp_path / "split.json").write_text(json.dumps({"train": SWDE}))
    refused(
        tmp_path / "split.json",
        r"list of records or \{'validation': \[...\]\}; got an object with keys \['train'\]",
    )
    (tmp_path / "scalar.json").write_text("3")
    refused(tmp_path / "scalar.json", "got int")
    (tmp_path / "broken.json").write_text("[{")
    refused(tmp_path / "broken.json", "broken.json: not valid JSON")
    (tmp_path / "broken.jsonl").write_text(json.dumps(SWDE[0]) + "\n{oops\n")
    refused(tmp_path / "broken.jsonl", "broken.jsonl line 2: not a JSON object")
    write_jsonl(tmp_path / "list.jsonl", [SWDE[0], [1, 2]])
    refused(tmp_path / "list.jsonl", "list.jsonl record 1: must be a JSON object; got list")
    write_jsonl(tmp_path / "ok.jsonl", SWDE)
    refused(tmp_path / "ok.jsonl", "limit must be an int >= 1 or None", limit=0)
    refused(tmp_path / "ok.jsonl", "extraction task must be one of", task="mmlu")


@pytest.mark.parametrize(
    "task, record, match",
    [
        (
            "swde",
            {"text": "t", "value": "v"},
            r"no field 'key' \(task 'swde' needs fields \['text', 'key', 'value'\]; "
            r"the record has \['text', 'value'\]\)",
        ),
        ("fda", {"key": "k", "value": "v"}, "no field 'text'"),
        ("fda", {"text": "t", "key": "k"}, "no field 'value'"),
        (
            "squad",
            {"text": "t"},
            r"no field 'value' \(task 'squad' needs fields \['text', 'value'\]",
        ),
        ("squad", {"text": 3, "value": "v"}, "field 'text' must be a string; got int"),
        ("squad", {"text": "t", "value": 3}, "field 'value' must be a string or a list of strings"),
        ("squad", {"text": "t", "value": ["", " "]}, "field 'value' holds no non-empty answer"),
        ("squad", {"text": "  ", "value": "v"}, "field 'text' is empty"),
        ("swde", {"text": "t", "key": " ", "value": "v"}, "field 'key' is empty"),
        (
            "fda",
            {"text": "..\nk:", "key": "k", "value": "v"},
            "field 'text' holds no document before the question",
        ),
        (
            "nq",
            {"context": "c", "question": "q"},
            r"no field 'answers' \(task 'nq' needs fields \['context', 'question', 'answers'\]",
        ),
        ("drop", {"context": "c", "answers": ["a"]}, "no field 'question'"),
        ("triviaqa", {"context": "c", "question": "q", "answers": "a"}, None),
        (
            "triviaqa",
            {"context": "q", "question": "q", "answers": ["a"]},
            "field 'context' is empty",
        ),
    ],
)
def test_bad_records_name_the_field(tmp_path, task, record, match):
    path = tmp_path / "r.jsonl"
    write_jsonl(path, [record])
    if match is None:  # a single answer string is accepted as one label
        assert read_extraction(path, task)[0].labels == ("a",)
        return
    with pytest.raises(ValueError, match=r"r\.jsonl record 0: " + match):
        read_extraction(path, task)


def test_bad_prompt_options_are_one_clear_error():
    rec = parse_record(SWDE[0], "swde")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_passes must be an int >= 1"):
            build_prompt(rec, num_passes=bad)
    with pytest.raises(ValueError, match="context_tokens needs a tokenizer"):
        build_prompt(rec, context_tokens=10)
    with pytest.raises(ValueError, match="context_tokens must be an int >= 1"):
        build_prompt(rec, tokenizer=ByteTokenizer(), context_tokens=0)
    squad = parse_record({"text": "t", "value": "v"}, "squad")
    with pytest.raises(ValueError, match="intro=True needs a SWDE/FDA record"):
        build_prompt(squad, intro=True)


# ----------------------------------------------------------------------------- synthetic corpus


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_synthetic_corpus_round_trips_in_every_format(tmp_path, suffix):
    path = tmp_path / f"corpus{suffix}"
    written = write_extraction_corpus(path, num_records=20, seed=5, num_fields=3)
    assert written == synthetic_records(20, seed=5, num_fields=3)  # a function of the seed
    assert written != synthetic_records(20, seed=6, num_fields=3)
    records = read_extraction(path, "swde")
    assert len(records) == 20
    for raw, rec in zip(written, records, strict=True):
        lines = rec.context[:-1].split("\n")
        values = dict(line.split(": ") for line in lines)
        assert len(values) == 3 and len(set(values.values())) == 3  # distinct keys and values
        assert values[raw["key"]] == raw["value"] and rec.labels == (raw["value"],)
        assert rec.question == raw["key"].capitalize() + ":"
        assert raw["text"].endswith("\n" + raw["key"] + ":")  # as the FDA release


def test_training_corpus_is_prompt_then_answer(tmp_path):
    path = tmp_path / "train.jsonl"
    written = write_extraction_corpus(path, num_records=6, seed=1, kind="train", num_passes=(1, 2))
    plain = synthetic_records(6, seed=1)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["text"] for x in lines] == [r["text"] for r in written]
    for i, (r, raw) in enumerate(zip(written, plain, strict=True)):
        rec = parse_record(raw, "swde")
        passes = 1 if i % 2 == 0 else 2
        assert r["text"] == build_prompt(rec, num_passes=passes).text + " " + raw["value"] + "\n"
        assert r["text"] == training_text(raw, num_passes=passes)
    # ask_all: every other field asked after the answer, in document order
    asked = write_extraction_corpus(
        tmp_path / "all.jsonl", num_records=6, seed=1, num_fields=3, kind="train", ask_all=True
    )
    for r, raw in zip(asked, synthetic_records(6, seed=1, num_fields=3), strict=True):
        fields = [line.split(": ") for line in raw["text"].split("\n")[:-1]]
        rest = "".join(f"{k.capitalize()}: {v}\n" for k, v in fields if k != raw["key"])
        assert r["text"] == training_text(raw) + rest and rest.count("\n") == 2
    with pytest.raises(ValueError, match="ask_all=True applies to kind='train' only"):
        write_extraction_corpus(path, num_records=2, ask_all=True)
    with pytest.raises(ValueError, match=r"kind must be one of \['release', 'train'\]"):
        write_extraction_corpus(path, num_records=2, kind="eval")
    with pytest.raises(ValueError, match=r"has suffix '\.txt'"):
        write_extraction_corpus(tmp_path / "c.txt", num_records=2)
    with pytest.raises(ValueError, match="num_passes must be an int >= 1"):
        write_extraction_corpus(path, num_records=2, kind="train", num_passes=(1, 0))
    with pytest.raises(ValueError, match="num_records must be an int >= 1"):
        write_extraction_corpus(path, num_records=0)
    with pytest.raises(ValueError, match=r"num_fields must be in \[1, 8\]"):
        synthetic_records(3, num_fields=9)
