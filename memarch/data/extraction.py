"""Recall-intensive extraction in the Based / "Just read twice" format: the six tasks, their
local release files, the prompts (with JRT's repeated context) and the ``contains`` score.

References: Based (Arora et al., arXiv 2402.18668) and JRT (Arora et al., arXiv 2407.05483;
``HazyResearch/prefix-linear-attention`` ``lm-eval-harness/lm_eval/tasks/based_*``). The public
releases are Hugging Face datasets (:data:`TASKS` names each one); this module only reads
local copies of them, nothing is downloaded.

**Records.** Every release record is a JSON object. Two layouts are accepted:

* ``text`` layout: ``text`` (the document), ``value`` (the answer string, or a list of
  acceptable answers) and, for SWDE and FDA, ``key`` (the attribute name). For SWDE/FDA the
  question is the cloze ``"{Key}:"`` (the key with its first letter upper-cased) appended
  after the document; a trailing copy of ``"{key}:"`` in ``text`` (how the FDA release ends its
  documents) and SWDE's ``"Summary of information above..."`` tail are removed first. For
  SQuAD-completion (and TriviaQA / NQ / DROP given in this layout) ``text`` already ends with
  the cloze question.
* ``qa`` layout (JRT's TriviaQA / NQ / DROP releases): ``context``, ``question`` and
  ``answers`` (a list of strings; any of them counts). TriviaQA's ``[PAR]``/``[DOC]``/``[TLE]``
  markers are removed from the context, and a trailing copy of the question too.

Each becomes an :class:`ExtractionRecord` ``(context, question, labels, key)``.

**Prompt** (:func:`build_prompt`) with ``P = num_passes``::

    prompt = intro + "\\n".join([context] * P) + (" " + question if question else "")

where, for SWDE/FDA, ``context = document.rstrip(newlines, periods, spaces) + "."`` and
``question = "{Key}:"``; for the ``qa`` layout ``context = context.strip(". ") + "."``. So
``P = 2`` is the context read twice, the question asked once, exactly (``intro`` is ``""``
unless asked for: JRT's twice-prompts for SWDE/FDA start with ``"Information about {Key}. "``).
Before repeating, ``context_tokens = C`` cuts the context to at most ``C`` tokens of the given
tokenizer (JRT: ``C = 1000 − 50``): the window of ``C`` tokens centred on the first occurrence
of an answer (case-insensitive; clamped to the document), or the last ``C`` tokens when no
answer occurs in it. The budget is per pass, so every pass is the same cut text.

**Score** (:func:`contains_score`, lm-eval's ``contains``): 1 if any label, regex-escaped and
stripped of surrounding whitespace, occurs case-insensitively in the generated text (greedy,
generation stopped at ``"\\n"``, at most 48 new tokens), else 0; a task's score is the mean over
records.

**Synthetic corpus** (:func:`write_extraction_corpus`): small semi-structured records
(``"name: maple\\ncity: onyx\\ncolor: iris"``) in the SWDE/FDA release layout, for training and
evaluating tiny models.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memarch.data.tokenizers import TextTokenizer

SUFFIXES = (".jsonl", ".json", ".parquet")
QA_FIELDS = ("context", "question", "answers")
SWDE_SUMMARY = "Summary of information above..."
TRIVIAQA_MARKERS = re.compile(r"\[PAR\]|\[DOC\]|\[TLE\]")
UNTIL = ("\n",)  # lm-eval's stop strings of every task
MAX_GEN_TOKS = 48  # lm-eval's max_gen_toks of every task
JRT_CONTEXT_TOKENS = 1000 - 50  # JRT's context_length minus answer_length


@dataclasses.dataclass(frozen=True)
class ExtractionTask:
    """One task's conventions.

    ``release``: the Hugging Face dataset of the public release; ``text_fields``: the fields
    a ``text``-layout record must have; ``cloze_from_key``: the question is ``"{Key}:"`` built
    from the ``key`` field (else it is already the end of ``text``); ``qa_layout``: records may
    also come as ``context``/``question``/``answers``."""

    name: str
    release: str
    text_fields: tuple[str, ...]
    cloze_from_key: bool
    qa_layout: bool
    description: str


TASKS: dict[str, ExtractionTask] = {
    t.name: t
    for t in (
        ExtractionTask(
            "swde",
            "hazyresearch/based-swde-v2",
            ("text", "key", "value"),
            True,
            False,
            "attribute extraction from raw HTML pages (Lockard et al. 2019)",
        ),
        ExtractionTask(
            "fda",
            "hazyresearch/based-fda",
            ("text", "key", "value"),
            True,
            False,
            "key-value extraction from FDA 510(k) PDF chunks (Arora et al. 2023)",
        ),
        ExtractionTask(
            "squad",
            "hazyresearch/based-squad",
            ("text", "value"),
            False,
            False,
            "SQuAD passage + cloze question (the text ends with the question)",
        ),
        ExtractionTask(
            "triviaqa",
            "hazyresearch/based_triviaqa",
            ("text", "value"),
            False,
            True,
            "TriviaQA evidence + cloze question",
        ),
        ExtractionTask(
            "nq",
            "hazyresearch/based_nq_1024",
            ("text", "value"),
            False,
            True,
            "Natural Questions passage + cloze question (releases of 512/1024/2048 tokens)",
        ),
        ExtractionTask(
            "drop",
            "hazyresearch/based_drop",
            ("text", "value"),
            False,
            True,
            "DROP passage + cloze question",
        ),
    )
}


def get_extraction_task(name: str) -> ExtractionTask:
    """The task ``name``; ``ValueError`` naming the accepted ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"extraction task must be one of {list(TASKS)}; got {name!r}")
    return TASKS[name]


@dataclasses.dataclass(frozen=True)
class ExtractionRecord:
    """One question: ``context`` (the cleaned document, without the question), ``question``
    (appended once after the passes, after a space; ``""`` when it ends ``context``), ``labels``
    (acceptable answers, stripped, non-empty), ``key`` (SWDE/FDA attribute, else ``None``) and
    ``source`` (``"file record i"``, for messages)."""

    context: str
    question: str
    labels: tuple[str, ...]
    key: str | None = None
    source: str = ""


# ----------------------------------------------------------------------------- reading


def _files(path: Path, split: str) -> list[Path]:
    if not path.exists():
        raise ValueError(f"extraction data path {str(path)!r} does not exist")
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise ValueError(
                f"extraction file {str(path)!r} has suffix {path.suffix!r}; accepted: "
                f"{list(SUFFIXES)}"
            )
        return [path]
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not found:
        raise ValueError(f"extraction directory {str(path)!r} holds no {'/'.join(SUFFIXES)} file")
    # a saved release holds one file per split (e.g. data/validation-00000-of-00001.parquet)
    in_split = [p for p in found if split in p.relative_to(path).as_posix()]
    return in_split or found


def _json_records(path: Path, split: str) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict):
        if split not in data:
            raise ValueError(
                f"{path}: a .json file must hold a list of records or {{{split!r}: [...]}}; "
                f"got an object with keys {list(data)}"
            )
        data = data[split]
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: a .json file must hold a list of records or {{{split!r}: [...]}}; "
            f"got {type(data).__name__}"
        )
    return data


def _jsonl_records(path: Path) -> list:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {i + 1}: not a JSON object ({e.msg})") from None
    return out


def read_release(path: str | Path, *, split: str = "validation") -> list[tuple[str, dict]]:
    """``(source, record)`` of every record under ``path``: a ``.jsonl`` file (one object per
    non-blank line), a ``.json`` file (a list of objects, or ``{split: [...]}``), a
    ``.parquet`` file (one row per record), or a directory holding such files (searched
    recursively, sorted; files whose path names ``split`` are preferred when there are any).
    ``ValueError`` for a missing path, another suffix, an empty file or a non-object record."""
    out: list[tuple[str, dict]] = []
    for f in _files(Path(path), split):
        if f.suffix == ".jsonl":
            records = _jsonl_records(f)
        elif f.suffix == ".json":
            records = _json_records(f, split)
        else:
            try:
                records = pq.read_table(f).to_pylist()
            except (pa.ArrowInvalid, OSError) as e:
                raise ValueError(f"{f}: not a readable parquet file ({e})") from None
        if not records:
            raise ValueError(f"extraction file {str(f)!r} holds no records")
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise ValueError(f"{f} record {i}: must be a JSON object; got {type(r).__name__}")
            out.append((f"{f} record {i}", r))
    return out


def _string(record: dict, field: str, where: str, task: ExtractionTask, needed) -> str:
    if field not in record:
        raise ValueError(
            f"{where}: no field {field!r} (task {task.name!r} needs fields {list(needed)}; "
            f"the record has {list(record)})"
        )
    value = record[field]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} must be a string; got {type(value).__name__}")
    return value


def _labels(value, field: str, where: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ValueError(
            f"{where}: field {field!r} must be a string or a list of strings; got {value!r}"
        )
    labels = tuple(v.strip() for v in values if v.strip())
    if not labels:
        raise ValueError(f"{where}: field {field!r} holds no non-empty answer ({value!r})")
    return labels


def _strip_suffix_ci(text: str, suffix: str) -> str:
    """``text`` without trailing copies of ``suffix`` (case-insensitive), as JRT's tasks do."""
    while suffix and text.lower().endswith(suffix.lower()):
        text = text[: -len(suffix)]
    return text


def upper_key(key: str) -> str:
    """``key`` with its first letter upper-cased (``"year"`` → ``"Year"``), as the cloze asks."""
    return key[:1].upper() + key[1:]


def _close(text: str) -> str:
    """``text`` without trailing whitespace/newlines/periods, ending with one ``"."``."""
    return text.strip().rstrip(".\n\r\t ") + "."


def parse_record(
    record: dict, task: str | ExtractionTask, source: str = "record"
) -> ExtractionRecord:
    """The :class:`ExtractionRecord` of one release record of ``task`` (see the module
    docstring for both layouts); ``ValueError`` naming a missing or mistyped field."""
    spec = get_extraction_task(task) if isinstance(task, str) else task
    if not isinstance(record, dict):
        raise ValueError(f"{source}: must be a JSON object; got {type(record).__name__}")
    if spec.qa_layout and "text" not in record and "context" in record:
        context = _string(record, "context", source, spec, QA_FIELDS)
        question = _string(record, "question", source, spec, QA_FIELDS).strip()
        if "answers" not in record:
            raise ValueError(
                f"{source}: no field 'answers' (task {spec.name!r} needs fields "
                f"{list(QA_FIELDS)} or {list(spec.text_fields)}; the record has {list(record)})"
            )
        labels = _labels(record["answers"], "answers", source)
        if spec.name == "triviaqa":
            context = TRIVIAQA_MARKERS.sub("", context)
        context = _strip_suffix_ci(context.strip(), question)
        context = context.strip().strip(".").strip()
        if not context:
            raise ValueError(f"{source}: field 'context' is empty")
        return ExtractionRecord(context + ".", question, labels, None, source)
    text = _string(record, "text", source, spec, spec.text_fields)
    if "value" not in record:
        raise ValueError(
            f"{source}: no field 'value' (task {spec.name!r} needs fields "
            f"{list(spec.text_fields)}; the record has {list(record)})"
        )
    labels = _labels(record["value"], "value", source)
    if not spec.cloze_from_key:
        if not text.strip():
            raise ValueError(f"{source}: field 'text' is empty")
        return ExtractionRecord(text.strip(), "", labels, None, source)
    key = _string(record, "key", source, spec, spec.text_fields).strip()
    if not key:
        raise ValueError(f"{source}: field 'key' is empty")
    if spec.name == "swde":
        text = text.split(SWDE_SUMMARY)[0]
    text = _strip_suffix_ci(text.rstrip(), key + ":")
    if not text.strip().rstrip(".\n\r\t "):
        raise ValueError(f"{source}: field 'text' holds no document before the question")
    return ExtractionRecord(_close(text), upper_key(key) + ":", labels, key, source)


def read_extraction(
    path: str | Path, task: str, *, split: str = "validation", limit: int | None = None
) -> list[ExtractionRecord]:
    """The records of ``task`` stored under ``path`` (:func:`read_release`, then
    :func:`parse_record`); the first ``limit`` of them if given."""
    spec = get_extraction_task(task)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an int >= 1 or None; got {limit!r}")
    raw = read_release(path, split=split)
    if limit is not None:
        raw = raw[:limit]
    return [parse_record(r, spec, source) for source, r in raw]


# ----------------------------------------------------------------------------- prompts


def _check_passes(num_passes: int) -> None:
    if isinstance(num_passes, bool) or not isinstance(num_passes, int) or num_passes < 1:
        raise ValueError(f"num_passes must be an int >= 1; got {num_passes!r}")


def answer_span(context: str, labels: Sequence[str]) -> tuple[int, int] | None:
    """``(start, end)`` characters of the earliest case-insensitive occurrence of any label in
    ``context`` (the longest label at a tie), or ``None``."""
    best = None
    low = context.lower()
    for label in labels:
        i = low.find(label.lower())
        if i >= 0 and (best is None or (i, -len(label)) < (best[0], best[0] - best[1])):
            best = (i, i + len(label))
    return best


def cut_window(num_tokens: int, budget: int, span: tuple[int, int] | None) -> tuple[int, int]:
    """The token window ``[lo, lo + budget)`` kept of ``num_tokens`` tokens: centred on the
    token span ``span = (a, b)`` (``lo = clamp((a + b) // 2 − budget // 2, 0, n − budget)``),
    or the last ``budget`` tokens when ``span`` is ``None``; everything when it fits."""
    if num_tokens <= budget:
        return 0, num_tokens
    if span is None:
        return num_tokens - budget, num_tokens
    a, b = span
    lo = (a + b) // 2 - budget // 2
    lo = min(max(lo, 0), num_tokens - budget)
    return lo, lo + budget


def cut_context(
    context: str, labels: Sequence[str], tokenizer: TextTokenizer, context_tokens: int
) -> str:
    """``context`` cut to at most ``context_tokens`` tokens of ``tokenizer`` (see the module
    docstring): the window centred on the first answer occurrence, else the last tokens. The
    answer's token span is ``[len(enc(context[:s])), len(enc(context[:e])))`` for its
    characters ``[s, e)``; an answer no longer than the budget is inside the window."""
    if (
        isinstance(context_tokens, bool)
        or not isinstance(context_tokens, int)
        or context_tokens < 1
    ):
        raise ValueError(f"context_tokens must be an int >= 1 or None; got {context_tokens!r}")
    ids = tokenizer.encode(context)
    if len(ids) <= context_tokens:
        return context
    chars = answer_span(context, labels)
    span = None
    if chars is not None:
        span = (
            len(tokenizer.encode(context[: chars[0]])),
            len(tokenizer.encode(context[: chars[1]])),
        )
    lo, hi = cut_window(len(ids), context_tokens, span)
    return tokenizer.decode(ids[lo:hi])


@dataclasses.dataclass(frozen=True)
class ExtractionPrompt:
    """A prompt and its parts: ``text = intro + "\\n".join([context] * num_passes) +
    (" " + question if question else "")``; ``context`` is the (cut) context of one pass."""

    text: str
    context: str
    question: str
    intro: str
    num_passes: int
    labels: tuple[str, ...]


def build_prompt(
    record: ExtractionRecord,
    *,
    num_passes: int = 1,
    tokenizer: TextTokenizer | None = None,
    context_tokens: int | None = None,
    intro: bool = False,
) -> ExtractionPrompt:
    """The prompt of ``record`` (module docstring): the context, cut to ``context_tokens``
    tokens of ``tokenizer`` when given, repeated ``num_passes`` times joined by ``"\\n"``,
    then the question once. ``intro`` prefixes JRT's ``"Information about {Key}. "`` (SWDE/FDA
    records only)."""
    _check_passes(num_passes)
    context = record.context
    if context_tokens is not None:
        if tokenizer is None:
            raise ValueError("context_tokens needs a tokenizer to count tokens; pass tokenizer=")
        context = cut_context(context, record.labels, tokenizer, context_tokens)
    head = ""
    if intro:
        if record.key is None:
            raise ValueError(
                f"{record.source}: intro=True needs a SWDE/FDA record (one with a key)"
            )
        head = f"Information about {upper_key(record.key)}. "
    body = "\n".join([context] * num_passes)
    text = head + body + (" " + record.question if record.question else "")
    return ExtractionPrompt(text, context, record.question, head, num_passes, record.labels)


def build_prompts(records: Iterable[ExtractionRecord], **kwargs) -> list[ExtractionPrompt]:
    """:func:`build_prompt` of each record (same keyword arguments)."""
    return [build_prompt(r, **kwargs) for r in records]


# ----------------------------------------------------------------------------- score


def contains_score(prediction: str, labels: Sequence[str] | str) -> int:
    """lm-eval's ``contains``: 1 if any label (stripped; regex characters taken literally)
    occurs in ``prediction`` ignoring case, else 0. ``ValueError`` for no non-empty label
    (an empty label would match everything)."""
    if not isinstance(prediction, str):
        raise ValueError(f"prediction must be a string; got {type(prediction).__name__}")
    if isinstance(labels, str):
        labels = [labels]
    cleaned = [label.strip() for label in labels if isinstance(label, str) and label.strip()]
    if not cleaned:
        raise ValueError(f"labels must hold at least one non-empty string; got {labels!r}")
    return max(
        int(re.search(re.escape(label), prediction, re.IGNORECASE) is not None) for label in cleaned
    )


# ----------------------------------------------------------------------------- synthetic corpus

SYNTHETIC_KEYS = ("name", "city", "color", "team", "brand", "genre", "river", "tree")
# values: words with distinct first letters, so the first character read back names the value
SYNTHETIC_VALUES = (
    "amber",
    "birch",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "iris",
    "juniper",
    "kestrel",
    "lotus",
    "maple",
    "nectar",
    "onyx",
    "pebble",
)
CORPUS_KINDS = ("release", "train")


def synthetic_records(
    num_records: int,
    *,
    seed: int = 0,
    num_fields: int = 4,
    keys: Sequence[str] = SYNTHETIC_KEYS,
    values_pool: Sequence[str] = SYNTHETIC_VALUES,
) -> list[dict]:
    """``num_records`` release-format records (SWDE/FDA layout) of random semi-structured
    documents: ``num_fields`` distinct keys of ``keys`` in random order, one ``"key: value"``
    line each, the values distinct words of ``values_pool`` (by default 16 words with distinct
    first letters); the record asks one of them: ``{"text": document + "\\n" + key + ":",
    "key": key, "value": value}`` (the text ends with the question, as in the FDA release).
    A function of ``seed``."""
    if isinstance(num_records, bool) or not isinstance(num_records, int) or num_records < 1:
        raise ValueError(f"num_records must be an int >= 1; got {num_records!r}")
    if not 1 <= num_fields <= len(keys):
        raise ValueError(
            f"num_fields must be in [1, {len(keys)}] (the number of keys); got {num_fields}"
        )
    for name, pool in (("keys", keys), ("values_pool", values_pool)):
        if len(set(pool)) != len(pool) or not all(isinstance(k, str) and k.strip() for k in pool):
            raise ValueError(f"{name} must be distinct non-empty strings; got {list(pool)!r}")
    if num_fields > len(values_pool):
        raise ValueError(
            f"num_fields must be <= len(values_pool)={len(values_pool)} (values are distinct "
            f"within a document); got {num_fields}"
        )
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_records):
        chosen = [keys[int(i)] for i in rng.permutation(len(keys))[:num_fields]]
        values = [values_pool[int(i)] for i in rng.permutation(len(values_pool))[:num_fields]]
        asked = int(rng.integers(num_fields))
        document = "\n".join(f"{k}: {v}" for k, v in zip(chosen, values, strict=True))
        out.append(
            {"text": f"{document}\n{chosen[asked]}:", "key": chosen[asked], "value": values[asked]}
        )
    return out


def training_text(record: dict, *, num_passes: int = 1, task: str = "swde") -> str:
    """A training document for ``record``: its prompt with ``num_passes`` passes, a space, the
    answer and ``"\\n"`` (generation stops at the newline)."""
    parsed = parse_record(record, task)
    return build_prompt(parsed, num_passes=num_passes).text + " " + parsed.labels[0] + "\n"


def _write(path: Path, records: list[dict]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps({"validation": records}), encoding="utf-8")
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        raise ValueError(
            f"extraction corpus path {str(path)!r} has suffix {path.suffix!r}; accepted: "
            f"{list(SUFFIXES)}"
        )


def _fields(record: dict) -> list[tuple[str, str]]:
    """The ``(key, value)`` lines of a synthetic record's document."""
    lines = record["text"].split("\n")[:-1]  # the last line is the question
    return [tuple(line.split(": ", 1)) for line in lines]  # type: ignore[misc]


def write_extraction_corpus(
    path: str | Path,
    *,
    num_records: int,
    seed: int = 0,
    num_fields: int = 4,
    kind: str = "release",
    num_passes: Sequence[int] = (1,),
    ask_all: bool = False,
    keys: Sequence[str] = SYNTHETIC_KEYS,
    values_pool: Sequence[str] = SYNTHETIC_VALUES,
) -> list[dict]:
    """Writes :func:`synthetic_records` to ``path`` in the release format chosen by its suffix
    (``.jsonl``, ``.json`` as ``{"validation": [...]}``, ``.parquet``) and returns them.

    ``kind="release"``: the records as an evaluation reads them (``text`` ends with the
    question). ``kind="train"``: the same records with ``text`` replaced by
    :func:`training_text` (prompt + answer + ``"\\n"``), record i using
    ``num_passes[i % len]`` passes, for ``memarch train`` with ``data.task=text`` and
    ``data.text_file=path`` (a ``.jsonl``). ``ask_all`` (train only) then asks every other
    field of the document too, one ``"{Key}: value\\n"`` line each in document order (more
    recall targets per document)."""
    if kind not in CORPUS_KINDS:
        raise ValueError(f"kind must be one of {list(CORPUS_KINDS)}; got {kind!r}")
    if ask_all and kind != "train":
        raise ValueError("ask_all=True applies to kind='train' only")
    passes = list(num_passes)
    if not passes:
        raise ValueError("num_passes must list at least one pass count")
    for p in passes:
        _check_passes(p)
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(
            f"extraction corpus path {str(path)!r} has suffix {path.suffix!r}; accepted: "
            f"{list(SUFFIXES)}"
        )
    records = synthetic_records(
        num_records, seed=seed, num_fields=num_fields, keys=keys, values_pool=values_pool
    )
    if kind == "train":
        out = []
        for i, r in enumerate(records):
            text = training_text(r, num_passes=passes[i % len(passes)])
            if ask_all:
                text += "".join(f"{upper_key(k)}: {v}\n" for k, v in _fields(r) if k != r["key"])
            out.append({**r, "text": text})
        records = out
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, records)
    return records


__all__ = [
    "JRT_CONTEXT_TOKENS",
    "MAX_GEN_TOKS",
    "SUFFIXES",
    "SYNTHETIC_KEYS",
    "SYNTHETIC_VALUES",
    "TASKS",
    "UNTIL",
    "ExtractionPrompt",
    "ExtractionRecord",
    "ExtractionTask",
    "answer_span",
    "build_prompt",
    "build_prompts",
    "contains_score",
    "cut_context",
    "cut_window",
    "get_extraction_task",
    "parse_record",
    "read_extraction",
    "read_release",
    "synthetic_records",
    "training_text",
    "upper_key",
    "write_extraction_corpus",
]
