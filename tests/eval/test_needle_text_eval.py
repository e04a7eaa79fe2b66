"""Needle in a haystack on text, scored (memarch.eval.needle_text): string_match_all, the
depth × length grid with fake generators (an oracle scores 1, a constant 0), the table and
heatmap, the bigram baseline, and the acceptance test: a tiny attention model trained on the
needle corpus with the ordinary trainer finds the needles through LMSession.generate_until,
while the bigram baseline trained on the same corpus stays at chance."""

import json
import re
import time

import pytest

from memarch.data.documents import LocalCorpus
from memarch.data.needle_text import FAMILIES, Haystack, TextNeedleConfig, write_needle_corpus
from memarch.data.prepare import prepare
from memarch.data.tokenizers import ByteTokenizer
from memarch.eval.needle_text import (
    BigramBaseline,
    NeedleGridResult,
    evaluate_needle_grid,
    needle_grid_table,
    string_match_all,
    write_needle_heatmap,
)

TOK = ByteTokenizer()
PROSE = """The old lighthouse stood on a rock at the end of the harbour wall. Every evening the \
keeper climbed the narrow stairs, wound the clockwork and lit the lamp. In winter the wind came \
off the sea so hard that the glass hummed, and the keeper wrote in his log that the tower was \
singing again. Ships passed far out in the dark, and he counted their lights as they went by.

His sister lived in the village below, where she kept a shop that sold rope, lamp oil, bread \
and thread. She visited him on Sundays with a basket of apples and a jar of soup. They talked \
about the weather, the fishing boats and the price of coal, but never about why he stayed alone \
on the rock. When the tide was low she walked back across the sand, and he watched her until \
she reached the first houses.

One spring a storm broke the great lens. For three nights the harbour was dark, and the boats \
stayed at their moorings. A glassmaker came from the city with a cart full of straw and crates. \
He worked for a week in the lamp room, fitting the new prisms one by one, and he said very \
little. When the lamp turned again on the fourth evening, the whole village came out to watch \
the beam sweep over the water.

Years later the light was made electric and the keeper was no longer needed. He moved into a \
small cottage near the shop. He still woke before dawn, out of habit, and looked toward the \
tower to see whether the beam was turning. Children from the school asked him about storms and \
shipwrecks, and he told them what he remembered, and some things he only half remembered.
"""


@pytest.fixture(scope="module")
def hay():
    return Haystack.from_texts([PROSE])


def oracle(config: TextNeedleConfig):
    """A generator that reads the answers off the prompt: the needle sentences (the template
    as a regex) give key → values; the keys named after the context are the asked ones."""
    pattern = re.escape(config.needle_template)
    pattern = pattern.replace(r"\{key\}", r"(?P<key>\S+?)").replace(r"\{value\}", r"(?P<value>\d+)")
    calls = []

    def generate(prompts, *, max_new_tokens, until):
        calls.append((len(prompts), max_new_tokens, tuple(until)))
        out = []
        for p in prompts:
            found = {}
            for m in re.finditer(pattern, p):
                found.setdefault(m["key"], []).append(m["value"])
            question = p[p.rindex("\n") :]
            asked = sorted((question.index(k), k) for k in found if k in question)
            out.append(" " + ", ".join(v for _, k in asked for v in found[k]) + ".")
        return out

    generate.calls = calls
    return generate


def test_string_match_all_is_the_fraction_of_answers_contained():
    assert string_match_all(" 123, 456.", ["123", "456"]) == 1.0
    assert string_match_all("the answer: 1234", ["123", "999"]) == 0.5
    assert string_match_all("ABC", ["abc"]) == 1.0
    assert string_match_all("", ["1"]) == 0.0
    for bad in ([], "123"):
        with pytest.raises(ValueError, match="answers must be a non-empty sequence"):
            string_match_all("x", bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_oracle_scores_one_and_a_constant_zero_on_every_cell(family, hay):
    config = TextNeedleConfig(family)
    gen = oracle(config)
    kw = dict(lengths=(800, 1000), depths=(0, 50, 100), num_examples=3, seed=5, max_new_tokens=40)
    res = evaluate_needle_grid(gen, config, hay, TOK, **kw)
    assert set(res.scores) == {(d, n) for d in (0.0, 50.0, 100.0) for n in (800, 1000)}
    assert all(s == 1.0 for s in res.scores.values()) and res.mean == 1.0
    assert gen.calls == [(18, 40, ("\n",))]  # one call with every prompt
    assert len(res.examples) == 18 and res.num_examples == 3 and res.family == family
    assert res.wall_time_s >= res.generate_time_s > 0
    for e in res.examples:
        assert e.length - config.length_tolerance <= e.num_tokens <= e.length
        assert e.depth in (0.0, 50.0, 100.0) and 0 <= e.needle_depth <= 100
    const = evaluate_needle_grid(
        lambda prompts, **_: [" 1234567."] * len(prompts), config, hay, TOK, **kw
    )
    assert all(s == 0.0 for s in const.scores.values())


def test_partial_answers_score_their_fraction(hay):
    config = TextNeedleConfig("multivalue")  # 4 values; answering one scores 1/4
    full = oracle(config)

    def first_only(prompts, **kw):
        return [o.split(",")[0] for o in full(prompts, **kw)]

    res = evaluate_needle_grid(
        first_only, config, hay, TOK, lengths=[800], depths=[30], num_examples=4, seed=0,
        max_new_tokens=16,
    )  # fmt: skip
    assert res.scores == {(30.0, 800): 0.25}


def test_cells_share_the_needles_of_each_index(hay):
    config = TextNeedleConfig()
    res = evaluate_needle_grid(
        oracle(config), config, hay, TOK, lengths=[500, 600], depths=[0, 100], num_examples=2,
        seed=1, max_new_tokens=8,
    )  # fmt: skip
    by_index = {}
    for e in res.examples:
        by_index.setdefault(e.index, set()).add(e.answers)
    assert sorted(by_index) == [0, 1] and all(len(v) == 1 for v in by_index.values())
    assert by_index[0] != by_index[1]


def test_table_and_heatmap(tmp_path):
    scores = {(0.0, 128): 1.0, (50.0, 128): 0.5, (0.0, 256): 0.25, (50.0, 256): 0.0}
    assert needle_grid_table(scores) == "\n".join(
        [
            "| depth % \\ length | 128 | 256 |",
            "|---|---|---|",
            "| 0 | 1.00 | 0.25 |",
            "| 50 | 0.50 | 0.00 |",
            "| mean | 0.75 | 0.12 |",
        ]
    )
    assert needle_grid_table({(10.0, 64): 1 / 3}, digits=3).splitlines()[2] == "| 10 | 0.333 |"
    res = NeedleGridResult(scores, (), "single", 1, 0.1, 0.05)
    path = write_needle_heatmap(res, tmp_path / "plots" / "needle.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_needle_heatmap(scores, tmp_path / "b.png", title="t").is_file()
    for bad in ({}, None):
        with pytest.raises(ValueError, match="scores must be a non-empty"):
            needle_grid_table(bad)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(generate=None), "generate must be callable"),
        (dict(lengths=[]), "lengths must be a non-empty sequence"),
        (dict(lengths=[100, 100]), "lengths must not repeat"),
        (dict(lengths=[0]), "lengths must hold ints >= 1"),
        (dict(depths=[]), "depths must be a non-empty sequence"),
        (dict(depths=[150]), r"depths must hold numbers in \[0, 100\]"),
        (dict(depths=[True]), r"depths must hold numbers in \[0, 100\]"),
        (dict(depths=[5, 5]), "depths must not repeat"),
        (dict(num_examples=0), "num_examples must hold ints >= 1"),
        (dict(max_new_tokens=0), "max_new_tokens must hold ints >= 1"),
        (dict(generate=lambda prompts, **_: ["1"]), "generate returned 1 outputs for 2 prompts"),
        (dict(generate=lambda prompts, **_: [None] * len(prompts)), "generate must return strings"),
    ],
)
def test_grid_errors(kwargs, message, hay):
    config = TextNeedleConfig()
    args = dict(generate=oracle(config), lengths=[400], depths=[50], num_examples=2,
                max_new_tokens=8) | kwargs  # fmt: skip
    with pytest.raises(ValueError, match=message):
        evaluate_needle_grid(args.pop("generate"), config, hay, TOK, seed=0, **args)


def test_bigram_baseline_counts_pairs_and_generates_greedily(tmp_path):
    # Given sequences where 5 → 6 twice and 5 → 7 once, 6 → 5 and 6 → 8 once each (tie)
    model = BigramBaseline.fit([[5, 6, 5, 7], [5, 6, 8], [9]], TOK)
    assert model.next_token[5] == 6 and model.next_token[6] == 5  # tie 5 vs 8: smaller id
    assert 7 not in model.next_token and 9 not in model.next_token
    assert model.fallback == 6  # the most frequent next token (twice)
    assert model.generate_ids(6, 4) == [5, 6, 5, 6]
    assert model.generate_ids(200, 2) == [6, 5]  # an unseen token: the fallback
    # text in, text out: "abab" teaches a → b → a; until cuts before the first stop string
    text = BigramBaseline.from_texts(["abab", "abab"], TOK)
    assert text.generate_until(["xa", "b"], max_new_tokens=5) == ["babab", "ababa"]
    assert text.generate_until(["a", "b"], max_new_tokens=5, until=["ab"]) == ["b", ""]
    assert text.generate_until(["a"], max_new_tokens=3, until="a") == ["b"]
    # from a corpus file and from a prepared directory: the same counts
    docs = ["the cat sat", "the cat ran", "a dog sat"]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    from_file = BigramBaseline.from_corpus(tmp_path / "c.jsonl", TOK)
    assert from_file.next_token == BigramBaseline.from_texts(docs, TOK).next_token
    prepare(LocalCorpus((str(tmp_path / "c.jsonl"),)), tmp_path / "prep", TOK, val_every=1000,
            progress=False)  # fmt: skip
    from_dir = BigramBaseline.from_corpus(tmp_path / "prep", TOK)
    assert from_dir.next_token == from_file.next_token
    with pytest.raises(ValueError, match="needs a sequence of >= 2 tokens"):
        BigramBaseline.fit([[1], []], TOK)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        from_file.generate_until(["a"], max_new_tokens=0)
    with pytest.raises(ValueError, match="1-D token ids"):
        BigramBaseline.fit([[[1, 2]]], TOK)


# -- acceptance: a tiny model learns the task; the bigram baseline does not ------------------

# What a 2-layer byte-level model learns in the CPU budget (~45 s of training): at 16-32 byte
# prompts (needle + question + a few words of prose) it copies the needle's number after a few
# hundred steps; at 64-128 bytes it stayed at chance after 600-2000 steps (copying must then
# be found among many more positions while the language-model loss on the prose dominates).
# The lengths are mixed in one corpus and the model is scored at the same lengths, every depth.
TRAIN_LENGTHS = (16, 24, 32)  # prompt tokens (bytes)
DEPTHS = (0, 25, 50, 75, 100)
TRAIN_STEPS = 400
TASK = TextNeedleConfig(
    "single",
    value_digits=2,
    keys=("cat", "dog", "owl", "fox", "bee", "elk", "yak", "ant"),
    preamble="",
    needle_template="{key}={value}.",
    question_template="\n{query}=",
    answer_prefix="",
    insert_at="word",
)


def test_a_tiny_model_trained_on_the_needle_corpus_finds_the_needle(tmp_path, hay, xla_optimized):
    from memarch.eval.lm_session import LMSession
    from memarch.models import LMConfig
    from memarch.train.config import DataConfig, MeshConfig, OptimConfig, TrainConfig
    from memarch.train.trainer import train

    # Given a .jsonl corpus of needle prompts + answers over real prose (digits stripped, so
    # the needle's number is the prompt's only digits), needles at random depths
    corpus = write_needle_corpus(
        tmp_path / "needles.jsonl", TASK, hay, TOK, lengths=TRAIN_LENGTHS, num_examples=2000,
        seed=0,
    )  # fmt: skip
    # When a 2-layer attention model (short convolutions on q, k, v) trains on it as text
    cfg = TrainConfig(
        name="needle_text",
        model=LMConfig(
            vocab_size=384,
            d_model=64,
            num_heads=4,
            pattern="AA",
            mlp_hidden=128,
            mixers={"attention": {"short_conv": 4}},
        ),
        data=DataConfig(
            task="text",
            vocab_size=258,
            tokenizer="byte",
            text_file=str(corpus),
            text_val_every=50,
            data_dir=str(tmp_path / "data"),
            seq_len=128,
            num_eval_examples=4,
        ),
        optim=OptimConfig(learning_rate=1e-2, warmup_steps=20),
        mesh=MeshConfig(data=-1),
        batch_size=8,
        num_steps=TRAIN_STEPS,
        log_every=100,
        tensorboard=False,
    )
    t0 = time.perf_counter()
    res = train(cfg, workdir=tmp_path / "run", log=lambda s: None)
    train_s = time.perf_counter() - t0
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    session = LMSession.from_run_dir(tmp_path / "run", batch_size=32, bucket=256)
    # Then, scored through LMSession.generate_until on held-out needles (another seed) at the
    # trained lengths and every depth, it finds them
    grid = dict(lengths=TRAIN_LENGTHS, depths=DEPTHS, num_examples=8, seed=1, max_new_tokens=4)
    model = evaluate_needle_grid(session.generate_until, TASK, hay, TOK, **grid)
    bigram = BigramBaseline.from_corpus(corpus, TOK)
    base = evaluate_needle_grid(bigram.generate_until, TASK, hay, TOK, **grid)
    print(
        f"\ntiny attention LM, {TRAIN_STEPS} steps ({train_s:.1f} s), string_match_all "
        f"(evaluated in {model.wall_time_s:.1f} s):"
    )
    print(needle_grid_table(model))
    print(f"bigram baseline on the same corpus (evaluated in {base.wall_time_s:.2f} s):")
    print(needle_grid_table(base))
    write_needle_heatmap(model, tmp_path / "needle.png")
    assert model.mean >= 0.8 and min(model.scores.values()) >= 0.5, model.scores
    # while the bigram model of the same corpus stays at chance (it never copies a number)
    assert base.mean <= 0.1, base.scores
