"""Recall-intensive extraction (Based / JRT format) scored by ``contains``, with the context
read once or several times (JRT prompting).

:func:`evaluate_extraction` builds every record's prompt (:func:`memarch.data.extraction.
build_prompt`: the context, cut to ``context_tokens`` tokens when given, repeated
``num_passes`` times joined by ``"\\n"``, the question once), asks ``generate`` for greedy
continuations (``until=["\\n"]``, ``max_new_tokens`` 48 as in lm-eval), and scores each with
:func:`memarch.data.extraction.contains_score`; the result is the mean over records.
``generate`` is any callable with :meth:`memarch.eval.lm_session.LMSession.generate_until`'s
signature ``generate(prompts, *, max_new_tokens, until) -> list[str]``.

:func:`compare_passes` runs it for several pass counts on the same records and
:func:`passes_table` prints the comparison (Markdown; one row per model/task, one column per
pass count, then the change from the first to the last).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from memarch.data.extraction import (
    MAX_GEN_TOKS,
    UNTIL,
    ExtractionRecord,
    build_prompt,
    contains_score,
    get_extraction_task,
    parse_record,
)
from memarch.data.tokenizers import TextTokenizer

Generate = Callable[..., list[str]]


def _records(records: Sequence[ExtractionRecord | dict], task: str) -> list[ExtractionRecord]:
    spec = get_extraction_task(task)
    out = []
    for i, r in enumerate(records):
        if isinstance(r, ExtractionRecord):
            out.append(r)
        elif isinstance(r, dict):
            out.append(parse_record(r, spec, f"record {i}"))
        else:
            raise ValueError(
                f"record {i} must be an ExtractionRecord or a release dict; got {type(r).__name__}"
            )
    if not out:
        raise ValueError("records is empty: nothing to evaluate")
    return out


def evaluate_extraction(
    generate: Generate,
    records: Sequence[ExtractionRecord | dict],
    *,
    task: str,
    tokenizer: TextTokenizer | None,
    num_passes: int = 1,
    context_tokens: int | None = None,
    max_new_tokens: int = MAX_GEN_TOKS,
    until: Sequence[str] = UNTIL,
    intro: bool = False,
    max_length: int | None = None,
    details: bool = False,
) -> dict[str, Any]:
    """``{"contains": mean score, "n": records, "wall_s": seconds, "task", "num_passes"}``.

    ``records``: parsed :class:`ExtractionRecord` s or raw release dicts of ``task``.
    ``tokenizer`` counts tokens for ``context_tokens`` (the per-pass budget) and for
    ``max_length`` (when given, a prompt of more than ``max_length − max_new_tokens`` tokens is
    an error naming it, before anything is generated). ``details=True`` adds ``"prompts"``,
    ``"generations"`` and ``"scores"`` (per record, in order)."""
    parsed = _records(records, task)
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise ValueError(f"max_new_tokens must be an int >= 1; got {max_new_tokens!r}")
    prompts = [
        build_prompt(
            r,
            num_passes=num_passes,
            tokenizer=tokenizer,
            context_tokens=context_tokens,
            intro=intro,
        )
        for r in parsed
    ]
    if max_length is not None:
        if tokenizer is None:
            raise ValueError("max_length needs a tokenizer to count prompt tokens; pass tokenizer=")
        room = max_length - max_new_tokens
        for r, p in zip(parsed, prompts, strict=True):
            n = len(tokenizer.encode(p.text))
            if n > room:
                raise ValueError(
                    f"{r.source or 'a record'}: the prompt with num_passes={num_passes} is {n} "
                    f"tokens; max_length={max_length} leaves {room} after {max_new_tokens} new "
                    "tokens (set context_tokens to cut the context)"
                )
    start = time.perf_counter()
    generations = generate(
        [p.text for p in prompts], max_new_tokens=max_new_tokens, until=list(until)
    )
    wall = time.perf_counter() - start
    if len(generations) != len(prompts):
        raise ValueError(f"generate returned {len(generations)} texts for {len(prompts)} prompts")
    scores = [contains_score(g, p.labels) for g, p in zip(generations, prompts, strict=True)]
    out: dict[str, Any] = {
        "contains": float(np.mean(scores)),
        "n": len(scores),
        "wall_s": wall,
        "task": task,
        "num_passes": num_passes,
    }
    if details:
        out.update(prompts=[p.text for p in prompts], generations=list(generations), scores=scores)
    return out


def compare_passes(
    generate: Generate,
    records: Sequence[ExtractionRecord | dict],
    *,
    task: str,
    tokenizer: TextTokenizer | None,
    passes: Sequence[int] = (1, 2),
    **kwargs: Any,
) -> dict[int, dict[str, Any]]:
    """``{num_passes: evaluate_extraction(...)}`` for each pass count, on the same records."""
    if not passes:
        raise ValueError("passes must list at least one pass count")
    parsed = _records(records, task)
    return {
        p: evaluate_extraction(
            generate, parsed, task=task, tokenizer=tokenizer, num_passes=p, **kwargs
        )
        for p in passes
    }


def passes_table(results: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> str:
    """Markdown: rows = names (a model or task), columns = ``contains`` per pass count (``—``
    where missing), ``n``, then ``Δ`` = last pass count − first."""
    if not results:
        raise ValueError("results is empty: nothing to tabulate")
    passes = sorted({p for r in results.values() for p in r})
    head = "| model | " + " | ".join(f"passes={p}" for p in passes) + " | n | Δ |"
    rows = [head, "|---" * (len(passes) + 3) + "|"]
    for name, r in results.items():
        cells = [f"{r[p]['contains']:.3f}" if p in r else "—" for p in passes]
        n = max((r[p]["n"] for p in r), default=0)
        delta = (
            f"{r[passes[-1]]['contains'] - r[passes[0]]['contains']:+.3f}"
            if passes[0] in r and passes[-1] in r
            else "—"
        )
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {n} | {delta} |")
    return "\n".join(rows)


__all__ = ["compare_passes", "evaluate_extraction", "passes_table"]
