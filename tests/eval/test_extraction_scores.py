"""memarch.eval.extraction: contains-scored extraction through any generate_until callable, the
context read once or twice (JRT), fake generators with known scores, and a small recurrent
model trained on the synthetic extraction corpus, scored through LMSession.generate_until."""

from __future__ import annotations

import math
import re

import pytest

from memarch.data.extraction import (
    UNTIL,
    build_prompt,
    parse_record,
    read_extraction,
    synthetic_records,
)
from memarch.data.tokenizers import ByteTokenizer
from memarch.eval.extraction import compare_passes, evaluate_extraction, passes_table
from memarch.eval.lm_session import LMSession


def reading_oracle(prompts, *, max_new_tokens, until):
    """Answers ``Key:`` by reading the ``key: value`` line of the prompt's document."""
    out = []
    for p in prompts:
        key = re.search(r" (\w+):$", p).group(1).lower()
        value = re.search(rf"^{key}: (\w+)", p, re.MULTILINE).group(1)
        out.append(" " + value.upper() + " and more")  # the match ignores case
    return out


def constant(prompts, *, max_new_tokens, until):
    return [" amber" for _ in prompts]


def test_an_oracle_that_reads_the_document_scores_one_and_a_constant_zero():
    raw = [
        {"text": "color: red\ncity: oslo\ncity:", "key": "city", "value": "oslo"},
        {"text": "team: lions\nname: ada\n", "key": "team", "value": "lions"},
        {"text": "name: bo\n", "key": "name", "value": "bo"},
    ]
    tok = ByteTokenizer()
    for passes in (1, 2, 3):
        got = evaluate_extraction(
            reading_oracle, raw, task="swde", tokenizer=tok, num_passes=passes
        )
        assert got["contains"] == 1.0 and got["n"] == 3 and got["num_passes"] == passes
        assert got["task"] == "swde" and got["wall_s"] >= 0.0
        assert (
            evaluate_extraction(constant, raw, task="fda", tokenizer=tok, num_passes=passes)[
                "contains"
            ]
            == 0.0
        )
    # the synthetic corpus: the oracle reads every answer; a constant hits only its own value
    records = synthetic_records(40, seed=3)
    assert evaluate_extraction(reading_oracle, records, task="swde", tokenizer=tok)["contains"] == 1
    hits = sum(r["value"] == "amber" for r in records) / len(records)
    assert evaluate_extraction(constant, records, task="swde", tokenizer=tok)["contains"] == hits


def test_generate_gets_the_prompts_and_the_lm_eval_generation_settings():
    seen = {}

    def spy(prompts, *, max_new_tokens, until):
        seen.update(prompts=list(prompts), max_new_tokens=max_new_tokens, until=list(until))
        return ["France\n"] * len(prompts)  # a stop string left in does not hide the answer

    raw = [{"text": "Paris is in France. Paris is in", "value": "france"}]
    got = evaluate_extraction(spy, raw, task="squad", tokenizer=None, num_passes=2, details=True)
    assert seen == {
        "prompts": ["Paris is in France. Paris is in\nParis is in France. Paris is in"],
        "max_new_tokens": 48,
        "until": ["\n"],
    }
    assert list(UNTIL) == ["\n"]
    assert got["prompts"] == seen["prompts"] and got["generations"] == ["France\n"]
    assert got["scores"] == [1] and got["contains"] == 1.0
    # parsed records and an explicit generation length work the same
    recs = [parse_record(r, "squad") for r in raw]
    evaluate_extraction(spy, recs, task="squad", tokenizer=None, max_new_tokens=8)
    assert seen["max_new_tokens"] == 8 and seen["prompts"] == ["Paris is in France. Paris is in"]


def test_reading_twice_helps_a_reader_that_needs_two_passes_and_the_table_shows_it():
    def second_pass_only(prompts, *, max_new_tokens, until):
        # answers from the second copy of the context (none when the context is read once)
        out = []
        for p in prompts:
            parts = p.split("\n")
            n = len(parts) // 2
            twice = (
                len(parts) % 2 == 0
                and parts[: n - 1] == parts[n:-1]
                and parts[-1].startswith(parts[n - 1] + " ")
            )
            out.append(reading_oracle([p], max_new_tokens=1, until=())[0] if twice else "")
        return out

    records = synthetic_records(12, seed=0, num_fields=3)
    tok = ByteTokenizer()
    res = compare_passes(second_pass_only, records, task="swde", tokenizer=tok)
    assert res[1]["contains"] == 0.0 and res[2]["contains"] == 1.0
    assert res[1]["n"] == res[2]["n"] == 12
    table = passes_table(
        {
            "reader": res,
            "constant": compare_passes(constant, records, task="swde", tokenizer=tok, passes=(2,)),
        }
    )
    lines = table.splitlines()
    assert lines[0] == "| model | passes=1 | passes=2 | n | Δ |"
    assert lines[2] == "| reader | 0.000 | 1.000 | 12 | +1.000 |"
    assert lines[3].startswith("| constant | — | ") and lines[3].endswith(" | 12 | — |")


def test_bad_evaluation_input_is_one_clear_error():
    tok = ByteTokenizer()
    raw = [{"text": "name: bo\n", "key": "name", "value": "bo"}]
    with pytest.raises(ValueError, match="records is empty"):
        evaluate_extraction(constant, [], task="swde", tokenizer=tok)
    with pytest.raises(ValueError, match="extraction task must be one of"):
        evaluate_extraction(constant, raw, task="mmlu", tokenizer=tok)
    with pytest.raises(ValueError, match="record 0: no field 'key'"):
        evaluate_extraction(constant, [{"text": "t", "value": "v"}], task="swde", tokenizer=tok)
    with pytest.raises(
        ValueError, match="record 0 must be an ExtractionRecord or a release dict; got str"
    ):
        evaluate_extraction(constant, ["text"], task="swde", tokenizer=tok)
    with pytest.raises(ValueError, match="num_passes must be an int >= 1"):
        evaluate_extraction(constant, raw, task="swde", tokenizer=tok, num_passes=0)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        evaluate_extraction(constant, raw, task="swde", tokenizer=tok, max_new_tokens=0)
    with pytest.raises(ValueError, match="context_tokens needs a tokenizer"):
        evaluate_extraction(constant, raw, task="swde", tokenizer=None, context_tokens=5)
    with pytest.raises(ValueError, match="max_length needs a tokenizer"):
        evaluate_extraction(constant, raw, task="swde", tokenizer=None, max_length=64)
    # "name: bo. Name:" is 15 bytes; 15 + 48 > 62
    with pytest.raises(
        ValueError,
        match=r"record 0: the prompt with num_passes=1 is 15 tokens; max_length=62 leaves 14",
    ):
        evaluate_extraction(constant, raw, task="swde", tokenizer=tok, max_length=62)
    evaluate_extraction(constant, raw, task="swde", tokenizer=tok, max_length=63)
    with pytest.raises(ValueError, match="generate returned 2 texts for 1 prompts"):
        evaluate_extraction(lambda p, **k: ["a", "b"], raw, task="swde", tokenizer=tok)
    with pytest.raises(ValueError, match="passes must list at least one pass count"):
        compare_passes(constant, raw, task="swde", tokenizer=tok, passes=())
    with pytest.raises(ValueError, match="results is empty"):
        passes_table({})


# ----------------------------------------------------------------------------- acceptance


@pytest.fixture(scope="module")
def trained_session(trained_run):
    """The shared trained recurrent model (tests/eval/conftest.py), with room for the
    twice-read prompts, and the 48 held-out records it was not trained on."""
    run_dir, history, root = trained_run
    session = LMSession.from_run_dir(run_dir, max_length=256, batch_size=48, bucket=256)
    return session, read_extraction(root / "eval.jsonl", "swde"), history


def test_a_trained_recurrent_model_reads_once_and_twice(trained_session, capsys):
    session, records, history = trained_session
    assert history[-1]["loss"] < history[0]["loss"]
    results = compare_passes(
        session.generate_until,
        records,
        task="swde",
        tokenizer=session.tokenizer,
        max_length=session.max_length,
        details=True,
    )
    once, twice = results[1], results[2]
    for r in (once, twice):
        assert r["n"] == len(records) == 48
        assert math.isfinite(r["contains"]) and 0.0 <= r["contains"] <= 1.0
        assert r["contains"] == sum(r["scores"]) / 48
    # the same records, the twice-prompts exactly the doubled contexts
    for rec, p1, p2 in zip(records, once["prompts"], twice["prompts"], strict=True):
        assert p1 == rec.context + " " + rec.question
        assert p2 == rec.context + "\n" + rec.context + " " + rec.question
        assert p2 == build_prompt(rec, num_passes=2).text
        ids = session.tokenizer.encode
        assert ids(p2) == ids(rec.context) + ids("\n") + ids(rec.context) + ids(" " + rec.question)
    with capsys.disabled():
        print(f"\nextraction, 2-layer gated DeltaNet, {history[-1]['step']} steps:")
        print(passes_table({"GG": results}))
        for p, g in zip(twice["prompts"][:3], twice["generations"][:3], strict=True):
            print(f"  {p!r} -> {g!r}")
