"""Scoring needle-in-a-haystack on text (:mod:`memarch.data.needle_text`) over a depth × length
grid, RULER style (arXiv 2404.06654).

For every cell ``(depth %, length)`` of the grid and ``i < num_examples``, the prompt is
example ``index = i`` of stream ``seed`` at that length and depth (so every cell asks the same
needles: cells differ only in where they sit and how much text surrounds them). All prompts go
to ``generate`` in one call (any callable with the signature of
:meth:`memarch.eval.lm_session.LMSession.generate_until`:
``generate(prompts, *, max_new_tokens, until) -> list[str]``). A generation is scored by RULER's
``string_match_all``::

    score(output, answers) = |{a ∈ answers : a.lower() ⊂ output.lower()}| / |answers|

(substring containment), and a cell's score is the mean over its examples. The result keeps
the grid ``{(depth, length): score}`` (what :func:`memarch.eval.plots.plot_needle_heatmap`
draws), every example's output, and the wall time of the evaluation.

:class:`BigramBaseline` is the chance-level reference: the most frequent next token after each
token of a training corpus, generated greedily. It writes the corpus's typical continuation,
never the needle of the prompt in front of it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from memarch.data.documents import LocalCorpus, read_unit
from memarch.data.needle_text import Haystack, TextNeedleConfig, needle_example
from memarch.data.packing import PreparedSplit
from memarch.data.shards import INDEX_NAME
from memarch.eval.lm_session import decode_until
from memarch.eval.plots import plot_needle_heatmap

Generate = Callable[..., list[str]]


def string_match_all(output: str, answers: Sequence[str]) -> float:
    """RULER's ``string_match_all``: the fraction of ``answers`` contained in ``output``
    (case-insensitive substring test)."""
    if isinstance(answers, str) or not answers:
        raise ValueError(f"answers must be a non-empty sequence of str; got {answers!r}")
    text = output.lower()
    return sum(a.lower() in text for a in answers) / len(answers)


@dataclasses.dataclass(frozen=True)
class ScoredExample:
    """One prompt of the grid: its cell, index, expected answers, the model's output, its
    score, the prompt's token count and the measured depth of its first needle (%)."""

    depth: float
    length: int
    index: int
    answers: tuple[str, ...]
    output: str
    score: float
    num_tokens: int
    needle_depth: float


@dataclasses.dataclass(frozen=True)
class NeedleGridResult:
    """``scores[(depth, length)]``: mean ``string_match_all`` of the cell; ``examples``: every
    scored prompt; ``wall_time_s``: seconds of the whole evaluation (building the prompts,
    generating, scoring) and ``generate_time_s`` of the ``generate`` call alone."""

    scores: dict[tuple[float, int], float]
    examples: tuple[ScoredExample, ...]
    family: str
    num_examples: int
    wall_time_s: float
    generate_time_s: float

    @property
    def mean(self) -> float:
        """Mean score over the cells."""
        return float(np.mean(list(self.scores.values())))


def _check_positive_ints(values, name: str) -> tuple[int, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty sequence of ints >= 1; got {values!r}")
    for x in values:
        if isinstance(x, bool) or not isinstance(x, Integral) or x < 1:
            raise ValueError(f"{name} must hold ints >= 1; got {x!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat a value; got {list(values)}")
    return tuple(int(x) for x in values)


def _check_depths(depths) -> tuple[float, ...]:
    if isinstance(depths, str) or not isinstance(depths, Sequence) or not depths:
        raise ValueError(
            f"depths must be a non-empty sequence of numbers in [0, 100]; got {depths!r}"
        )
    for d in depths:
        if isinstance(d, bool) or not isinstance(d, Real) or not 0 <= d <= 100:
            raise ValueError(f"depths must hold numbers in [0, 100] (%); got {d!r}")
    if len(set(depths)) != len(depths):
        raise ValueError(f"depths must not repeat a value; got {list(depths)}")
    return tuple(float(d) for d in depths)


def evaluate_needle_grid(
    generate: Generate,
    config: TextNeedleConfig,
    haystack: Haystack,
    tokenizer,
    *,
    lengths: Sequence[int],
    depths: Sequence[float],
    num_examples: int,
    seed: int,
    max_new_tokens: int,
    until: Sequence[str] = ("\n",),
) -> NeedleGridResult:
    """Scores ``generate`` on the ``depths × lengths`` grid (see the module docstring);
    ``num_examples`` prompts per cell, generation cut at ``max_new_tokens`` tokens and before
    the first ``until`` string."""
    if not callable(generate):
        raise ValueError(
            f"generate must be callable (e.g. session.generate_until); got {generate!r}"
        )
    lengths = _check_positive_ints(lengths, "lengths")
    depths = _check_depths(depths)
    (num_examples,) = _check_positive_ints([num_examples], "num_examples")
    (max_new_tokens,) = _check_positive_ints([max_new_tokens], "max_new_tokens")
    if isinstance(until, str):
        until = (until,)
    t0 = time.perf_counter()
    cells, examples = [], []
    for depth in depths:
        for length in lengths:
            for i in range(num_examples):
                ex = needle_example(
                    config, haystack, tokenizer, length=length, depth=depth, seed=seed, index=i
                )
                cells.append((depth, length, i))
                examples.append(ex)
    t1 = time.perf_counter()
    outputs = generate(
        [ex.prompt for ex in examples], max_new_tokens=max_new_tokens, until=list(until)
    )
    generate_time = time.perf_counter() - t1
    if len(outputs) != len(examples):
        raise ValueError(
            f"generate returned {len(outputs)} outputs for {len(examples)} prompts; it must "
            "return one string per prompt"
        )
    scored, sums = [], {}
    for (depth, length, i), ex, out in zip(cells, examples, outputs, strict=True):
        if not isinstance(out, str):
            raise ValueError(f"generate must return strings; output {len(scored)} is {out!r}")
        s = string_match_all(out, ex.answers)
        sums[(depth, length)] = sums.get((depth, length), 0.0) + s
        scored.append(
            ScoredExample(depth, length, i, ex.answers, out, s, ex.num_tokens, ex.needles[0].depth)
        )
    scores = {cell: total / num_examples for cell, total in sums.items()}
    return NeedleGridResult(
        scores=scores,
        examples=tuple(scored),
        family=config.family,
        num_examples=num_examples,
        wall_time_s=time.perf_counter() - t0,
        generate_time_s=generate_time,
    )


def _scores(result: NeedleGridResult | Mapping[tuple[float, int], float]):
    scores = result.scores if isinstance(result, NeedleGridResult) else result
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty {(depth, length): score} mapping")
    return scores


def needle_grid_table(
    result: NeedleGridResult | Mapping[tuple[float, int], float], *, digits: int = 2
) -> str:
    """A Markdown table: one row per depth (%), one column per length, a final row with each
    length's mean over depths (missing cells blank)."""
    scores = _scores(result)
    depths = sorted({d for d, _ in scores})
    lengths = sorted({n for _, n in scores})

    def fmt(x):
        return "" if x is None else f"{x:.{digits}f}"

    lines = [
        "| depth % \\ length | " + " | ".join(str(n) for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    for d in depths:
        lines.append(f"| {d:g} | " + " | ".join(fmt(scores.get((d, n))) for n in lengths) + " |")
    means = []
    for n in lengths:
        col = [scores[(d, n)] for d in depths if (d, n) in scores]
        means.append(fmt(float(np.mean(col)) if col else None))
    lines.append("| mean | " + " | ".join(means) + " |")
    return "\n".join(lines)


def write_needle_heatmap(
    result: NeedleGridResult | Mapping[tuple[float, int], float],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """The depth × length heatmap of ``result`` as a PNG at ``path``
    (:func:`~memarch.eval.plots.plot_needle_heatmap`); the title names the family."""
    scores = _scores(result)
    if title is None:
        family = result.family if isinstance(result, NeedleGridResult) else "text"
        title = f"needle in a haystack ({family}): string_match_all"
    return plot_needle_heatmap(scores, path, title=title)


class BigramBaseline:
    """Greedy bigram model: after token ``a`` it writes ``next_token[a]``, the most frequent
    token following ``a`` in the training ids (ties: the smaller id), or ``fallback`` (the most
    frequent following token overall) after a token never followed in training.

    ``generate_until`` has :meth:`LMSession.generate_until`'s signature: the continuation of a
    prompt's last token, ``max_new_tokens`` tokens, cut at EOS and before the first ``until``
    string.
    """

    def __init__(self, next_token: Mapping[int, int], fallback: int, tokenizer):
        self.next_token = {int(a): int(b) for a, b in next_token.items()}
        self.fallback = int(fallback)
        self.tokenizer = tokenizer

    @classmethod
    def fit(cls, sequences: Iterable[Sequence[int]], tokenizer) -> BigramBaseline:
        """Counts the pairs ``(ids[t], ids[t+1])`` inside each sequence (none across two)."""
        pairs, seen = [], 0
        for seq in sequences:
            ids = np.asarray(seq, np.int64)
            if ids.ndim != 1:
                raise ValueError(f"sequences must be 1-D token ids; got shape {ids.shape}")
            if len(ids) >= 2:
                pairs.append(np.stack([ids[:-1], ids[1:]], axis=1))
            seen += 1
        if not pairs:
            raise ValueError(
                f"a bigram model needs a sequence of >= 2 tokens; got {seen} sequences without one"
            )
        flat = np.concatenate(pairs)
        uniq, counts = np.unique(flat, axis=0, return_counts=True)
        order = np.lexsort((uniq[:, 1], -counts, uniq[:, 0]))  # by prev, most frequent, id
        uniq = uniq[order]
        first = np.concatenate([[True], uniq[1:, 0] != uniq[:-1, 0]])
        table = dict(zip(uniq[first, 0].tolist(), uniq[first, 1].tolist(), strict=True))
        nxt, nxt_counts = np.unique(flat[:, 1], return_counts=True)
        fallback = int(nxt[np.argmax(nxt_counts)])
        return cls(table, fallback, tokenizer)

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer) -> BigramBaseline:
        """:meth:`fit` on the ids of each text."""
        return cls.fit((tokenizer.encode(t) for t in texts), tokenizer)

    @classmethod
    def from_corpus(
        cls,
        source: str | Path,
        tokenizer,
        *,
        split: str = "train",
        text_field: str = "text",
        txt_mode: str = "paragraph",
    ) -> BigramBaseline:
        """:meth:`fit` on a corpus: a prepared directory (the ids of split ``split``, prepared
        with ``tokenizer``) or a LocalCorpus path/glob (its documents encoded)."""
        path = Path(source).expanduser()
        if path.is_dir() and (path / INDEX_NAME).is_file():
            data = PreparedSplit(path, split, tokenizer=tokenizer)
            return cls.fit((data.read(d) for d in range(len(data))), tokenizer)
        corpus = LocalCorpus((str(path),), text_field=text_field, txt_mode=txt_mode)
        texts = (text for unit in corpus.units() for _, text in read_unit(unit, corpus))
        return cls.from_texts(texts, tokenizer)

    def generate_ids(self, last: int, max_new_tokens: int) -> list[int]:
        """The ``max_new_tokens`` greedy ids after token ``last``."""
        out, token = [], int(last)
        for _ in range(max_new_tokens):
            token = self.next_token.get(token, self.fallback)
            out.append(token)
        return out

    def generate_until(
        self, prompts: Sequence[str], *, max_new_tokens: int, until: Sequence[str] = ()
    ) -> list[str]:
        """Greedy bigram continuation text of each prompt (see the class docstring)."""
        if (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 1
        ):
            raise ValueError(f"max_new_tokens must be a positive int; got {max_new_tokens!r}")
        texts = []
        for prompt in prompts:
            ids = self.tokenizer.encode(prompt)
            gen = self.generate_ids(ids[-1] if ids else self.fallback, max_new_tokens)
            texts.append(decode_until(self.tokenizer, gen, until))
        return texts


__all__ = [
    "BigramBaseline",
    "NeedleGridResult",
    "ScoredExample",
    "evaluate_needle_grid",
    "needle_grid_table",
    "string_match_all",
    "write_needle_heatmap",
]
