"""Needle in a haystack on real text, RULER style (RULER, arXiv 2404.06654, §3 "Retrieval").

Where :mod:`memarch.data.needle` hides token needles in random filler, this module writes
*prompts*: natural text from a corpus (the haystack) with needle sentences such as
``"One of the special magic numbers for {key} is: {value}."`` inserted, and a question at the
end whose answer is every value of the asked keys. A model is scored on its generated text
(:mod:`memarch.eval.needle_text`, RULER's ``string_match_all``).

Families (RULER's ``num_needle_k`` = K keys, ``num_needle_v`` = V values per key,
``num_needle_q`` = Q keys asked; the example holds ``K·V`` needle sentences)
---------------------------------------------------------------------------------------------
=============  =========================  ==================================================
family         (K, V, Q), default          answers
=============  =========================  ==================================================
``single``     (1, 1, 1), fixed            the one value (S-NIAH)
``multikey``   (4, 1, 1), K ≥ 2            the asked key's value; K − 1 distractor needles
``multivalue`` (1, 4, 1), V ≥ 2            all V values of the one key
``multiquery`` (4, 1, 4), K ≥ Q ≥ 2        the values of the Q asked keys (in asked order)
=============  =========================  ==================================================

Keys are drawn without replacement from ``config.keys`` (words); values are distinct
``value_digits``-digit numbers (no leading zero). Several asked keys are joined as RULER does:
``"a, b, and c"``.

Prompt
------
``prompt = preamble + context + question``, with ``context`` the haystack's words and the
needle sentences joined by single spaces, and ``question`` the question template with
``{query}`` filled in. The completion a model should produce is :func:`answer_text`:
``answer_prefix + ", ".join(answers)`` (``answer_prefix`` is RULER's ``" "`` by default);
:func:`write_needle_corpus` writes ``prompt + completion + "\\n"`` documents for training.

Haystack
--------
A :class:`Haystack` is a sequence of words (whitespace collapsed: the text is split on any
whitespace and rejoined with one space). With ``strip_digits`` (the default of
:func:`load_haystack`) every digit is removed from the haystack, and words that held digits and
are left with no letter are dropped (a sentence end they carried moves to the word before:
``"in 1887."`` → ``"in."``), so the needles' numbers are the only digits of the prompt
(the task is learnable by small models; RULER's essays keep theirs). The words are read
cyclically: an example starts at a word drawn from its own random stream and wraps around the
end of the haystack, so a short corpus is repeated (as RULER repeats its essays).

Length (in tokens of the given tokenizer, no BOS)
-------------------------------------------------
The example uses the largest number ``n`` of haystack words for which
``len(tokenizer.encode(prompt)) ≤ length`` (binary search, each trial encoding the whole
prompt). If that leaves a gap larger than ``config.length_tolerance`` tokens (a long word did
not fit), a prefix of the next word is appended (the longest that fits, by characters).
Guarantee: ``length − length_tolerance ≤ len(tokenizer.encode(prompt)) ≤ length``, else a
``ValueError`` (``length`` shorter than the preamble, needles and question, or a tokenizer
whose counts cannot be met within the tolerance).

Depth
-----
Needles go in between haystack words: at any word boundary (``insert_at="word"``) or only at
sentence ends (``insert_at="sentence"``, RULER's rule: after a word ending in ``.``, ``!`` or
``?``, optionally followed by quotes or brackets, plus the haystack's start and end). With
``T_b`` the tokens of the first ``b`` haystack words (each word counted as
``len(encode(" " + word))``, exact for the byte tokenizer) and ``T`` those of all ``n``:

* ``depth = d`` (%): all needles, in a random order, form one block at the allowed boundary
  ``b`` whose ``T_b`` is nearest to ``d/100 · T`` (ties: the earlier one); so 0 % puts them
  before the first haystack word and 100 % after the last (right before the question, unless
  a truncated word was appended to meet the tolerance);
* ``depth = None``: each needle draws its own fraction ``u ~ U[0, 1)`` and goes to the allowed
  boundary nearest to ``u · T`` (RULER's default draws the needles' depths at random too).

Each needle's measured depth is reported exactly: ``100 · len(encode(haystack words before it))
/ len(encode(all haystack words))`` (0 when the haystack is empty).

Every example is a pure function of ``(config, haystack, tokenizer, length, depth, seed,
index)``; its random stream ``np.random.default_rng([seed, index])`` draws, in this order, the
keys, the values, the asked keys, the needles' order, the depth fractions and the haystack's
start word, so one ``(seed, index)`` has the same needles at every length and depth.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
import string
from collections.abc import Iterator, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Protocol

import numpy as np

from memarch.data.documents import LocalCorpus, read_unit
from memarch.data.packing import PreparedSplit
from memarch.data.shards import INDEX_NAME
from memarch.data.source import check_seed

FAMILIES = ("single", "multikey", "multivalue", "multiquery")
INSERT_AT = ("sentence", "word")
# (num_keys, num_values, num_queries) of each family when left None (RULER's niah_* defaults)
FAMILY_DEFAULTS = {
    "single": (1, 1, 1),
    "multikey": (4, 1, 1),
    "multivalue": (1, 4, 1),
    "multiquery": (4, 1, 4),
}
MAX_VALUE_DIGITS = 18  # values stay below 2**63

PREAMBLE = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize "
    "it. I will quiz you about the numbers afterwards.\n"
)
NEEDLE_TEMPLATE = "One of the special magic numbers for {key} is: {value}."
QUESTION_TEMPLATE = (
    "\nWhat are all the special magic numbers for {query} mentioned in the provided text? "
    "The special magic numbers for {query} mentioned in the provided text are"
)
DEFAULT_KEYS = (
    "amber-falcon", "bitter-lantern", "brave-harbor", "calm-meadow", "clever-otter",
    "crimson-valley", "dusty-compass", "eager-sparrow", "fancy-teapot", "gentle-glacier",
    "golden-anchor", "hollow-pine", "humble-river", "icy-orchard", "jolly-canyon",
    "kind-ember", "lively-mirror", "lucky-pebble", "misty-castle", "noble-thistle",
    "odd-lighthouse", "pale-violin", "proud-walrus", "quiet-forest", "rapid-comet",
    "rusty-kettle", "silent-island", "silver-badger", "sunny-harvest", "tidy-parrot",
    "vivid-tulip", "wise-beacon",
)  # fmt: skip
DEFAULT_MAX_WORDS = 1_000_000  # words load_haystack keeps from a corpus
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*$")


class Tokenizer(Protocol):
    """What this module needs of a tokenizer (:class:`~memarch.data.tokenizers.TextTokenizer`
    has it)."""

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...


def _fields(template: str, name: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"{name} is not a valid format string ({e}); got {template!r}") from None


def _check_template(template: str, name: str, required: tuple[str, ...]) -> None:
    if not isinstance(template, str):
        raise ValueError(f"{name} must be a str; got {template!r}")
    fields = _fields(template, name)
    if set(fields) != set(required):
        need = ", ".join("{" + f + "}" for f in required) or "no {field}"
        raise ValueError(
            f"{name} must contain {need} and no other field; got {template!r} (fields: {fields})"
        )


def _int(value, name: str, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class TextNeedleConfig:
    """One needle task on text; see the module docstring. ``None`` counts take the family's
    default (``FAMILY_DEFAULTS``); the resolved values are stored."""

    family: str = "single"  # one of FAMILIES
    num_keys: int | None = None  # K keys in the text (multikey: 1 asked + K − 1 distractors)
    num_values: int | None = None  # V values per key (multivalue)
    num_queries: int | None = None  # Q keys asked (multiquery)
    value_digits: int = 7  # digits of a value (RULER: 7), no leading zero
    keys: tuple[str, ...] = DEFAULT_KEYS  # key vocabulary: words (no whitespace, no digits)
    preamble: str = PREAMBLE  # text before the haystack (no fields)
    needle_template: str = NEEDLE_TEMPLATE  # fields {key} and {value}
    question_template: str = QUESTION_TEMPLATE  # field {query} (used any number of times)
    answer_prefix: str = " "  # the completion: answer_prefix + ", ".join(answers)
    insert_at: str = "sentence"  # needles between words: "sentence" ends or any "word"
    length_tolerance: int = 8  # tokens the prompt may fall short of the requested length

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {list(FAMILIES)}; got {self.family!r}")
        defaults = FAMILY_DEFAULTS[self.family]
        for name, default in zip(("num_keys", "num_values", "num_queries"), defaults, strict=True):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if isinstance(self.keys, str) or not isinstance(self.keys, Sequence):
            raise ValueError(f"keys must be a sequence of words; got {self.keys!r}")
        object.__setattr__(self, "keys", tuple(self.keys))
        self.validate()

    @property
    def num_needles(self) -> int:
        """Needle sentences per example, ``K·V``."""
        return self.num_keys * self.num_values

    @property
    def num_answers(self) -> int:
        """Values a complete answer holds, ``Q·V``."""
        return self.num_queries * self.num_values

    def validate(self) -> None:
        """Raises ``ValueError`` naming the offending field and the accepted values."""
        k, v, q = self.num_keys, self.num_values, self.num_queries
        for name in ("num_keys", "num_values", "num_queries"):
            _int(getattr(self, name), name, 1)
        fam = self.family
        if fam == "single" and (k, v, q) != (1, 1, 1):
            raise ValueError(
                f"family 'single' needs num_keys = num_values = num_queries = 1; got "
                f"({k}, {v}, {q}) (use 'multikey', 'multivalue' or 'multiquery')"
            )
        if fam == "multikey" and (k < 2 or v != 1 or q != 1):
            raise ValueError(
                f"family 'multikey' needs num_keys >= 2, num_values = 1, num_queries = 1; got "
                f"num_keys={k}, num_values={v}, num_queries={q}"
            )
        if fam == "multivalue" and (k != 1 or v < 2 or q != 1):
            raise ValueError(
                f"family 'multivalue' needs num_keys = 1, num_values >= 2, num_queries = 1; got "
                f"num_keys={k}, num_values={v}, num_queries={q}"
            )
        if fam == "multiquery" and (q < 2 or k < q or v != 1):
            raise ValueError(
                f"family 'multiquery' needs num_keys >= num_queries >= 2 and num_values = 1; got "
                f"num_keys={k}, num_values={v}, num_queries={q}"
            )
        d = self.value_digits
        if isinstance(d, bool) or not isinstance(d, Integral) or not 1 <= d <= MAX_VALUE_DIGITS:
            raise ValueError(f"value_digits must be an int in [1, {MAX_VALUE_DIGITS}]; got {d!r}")
        if self.num_needles > 9 * 10 ** (d - 1):
            raise ValueError(
                f"value_digits={d} gives {9 * 10 ** (d - 1)} distinct values, fewer than the "
                f"{self.num_needles} needles (num_keys·num_values); use more digits"
            )
        for i, key in enumerate(self.keys):
            if not isinstance(key, str) or not key or re.search(r"\s|\d", key):
                raise ValueError(
                    f"keys must be non-empty words without whitespace or digits; keys[{i}] is "
                    f"{key!r}"
                )
        if len(set(self.keys)) != len(self.keys):
            dup = sorted({x for x in self.keys if self.keys.count(x) > 1})
            raise ValueError(f"keys must be distinct; repeated: {dup}")
        if len(self.keys) < k:
            raise ValueError(f"keys must hold at least num_keys={k} words; got {len(self.keys)}")
        _check_template(self.preamble, "preamble", ())
        _check_template(self.needle_template, "needle_template", ("key", "value"))
        _check_template(self.question_template, "question_template", ("query",))
        if not isinstance(self.answer_prefix, str) or re.search(r"\d", self.answer_prefix):
            raise ValueError(
                f"answer_prefix must be a str without digits; got {self.answer_prefix!r}"
            )
        if self.insert_at not in INSERT_AT:
            raise ValueError(f"insert_at must be one of {list(INSERT_AT)}; got {self.insert_at!r}")
        _int(self.length_tolerance, "length_tolerance", 0)


# -- haystack ------------------------------------------------------------------------------


def _haystack_words(text: str, strip_digits: bool) -> list[str]:
    words = text.split()
    if not strip_digits:
        return words
    out = []
    for w in words:
        stripped = re.sub(r"\d", "", w)
        if stripped == w:
            out.append(w)
        elif any(c.isalpha() for c in stripped):
            out.append(stripped)
        elif out and (end := _SENTENCE_END.search(stripped)):  # "in 1887." -> "in."
            out[-1] += end.group(0)
    return out


@dataclasses.dataclass(frozen=True)
class Haystack:
    """The filler text as words (non-empty, no whitespace), read cyclically."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.words, str) or not isinstance(self.words, Sequence):
            raise ValueError(f"haystack words must be a sequence of str; got {self.words!r}")
        object.__setattr__(self, "words", tuple(self.words))
        if not self.words:
            raise ValueError("haystack must hold at least one word (the corpus text is empty)")
        for i, w in enumerate(self.words):
            if not isinstance(w, str) or not w or any(c.isspace() for c in w):
                raise ValueError(
                    f"haystack words must be non-empty str without whitespace; word {i} is {w!r}"
                )

    def __len__(self) -> int:
        return len(self.words)

    def word(self, i: int) -> str:
        """Word ``i mod len``."""
        return self.words[i % len(self.words)]

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str] | Iterator[str],
        *,
        strip_digits: bool = True,
        max_words: int | None = DEFAULT_MAX_WORDS,
    ) -> Haystack:
        """The words of ``texts`` in order (see the module docstring for ``strip_digits``),
        at most ``max_words`` of them (None: all)."""
        if not isinstance(strip_digits, bool):
            raise ValueError(f"strip_digits must be a bool; got {strip_digits!r}")
        if max_words is not None:
            _int(max_words, "max_words", 1)
        words: list[str] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"haystack texts must be str; text {i} is {type(text).__name__}")
            words.extend(_haystack_words(text, strip_digits))
            if max_words is not None and len(words) >= max_words:
                del words[max_words:]
                break
        return cls(tuple(words))


def _prepared_texts(directory: Path, tokenizer, split: str) -> Iterator[str]:
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        raise ValueError(
            f"tokenizer must be given to read the prepared directory {str(directory)!r} (its "
            "token ids are decoded back to text); got None"
        )
    data = PreparedSplit(directory, split, tokenizer=tokenizer)
    for d in range(len(data)):
        yield tokenizer.decode(data.read(d).tolist())


def _corpus_texts(corpus: LocalCorpus) -> Iterator[str]:
    for unit in corpus.units():
        for _, text in read_unit(unit, corpus):
            yield text


def load_haystack(
    source: Haystack | str | Path | Sequence[str],
    *,
    tokenizer=None,
    split: str = "validation",
    text_field: str = "text",
    txt_mode: str = "paragraph",
    strip_digits: bool = True,
    max_words: int | None = DEFAULT_MAX_WORDS,
) -> Haystack:
    """The haystack of ``source``:

    * a :class:`Haystack`: itself;
    * a list/tuple of strings: their words;
    * a directory holding ``index.json`` (written by ``memarch data prepare``): the documents
      of split ``split`` (default the held-out ``"validation"``), decoded with ``tokenizer``
      (required; the directory must have been prepared with it);
    * any other path or glob: a :class:`~memarch.data.documents.LocalCorpus` of
      ``.txt`` / ``.jsonl`` / ``.parquet`` files (``text_field``, ``txt_mode`` as there).

    At most ``max_words`` words are kept (the first ones). ``ValueError`` for an unreadable
    source or one without words.
    """
    if isinstance(source, Haystack):
        return source
    if isinstance(source, str | Path):
        path = Path(source).expanduser()
        if path.is_dir():
            if not (path / INDEX_NAME).is_file():
                raise ValueError(
                    f"haystack source {str(path)!r} is a directory without {INDEX_NAME} (not "
                    "prepared by `memarch data prepare`); name its files with a glob such as "
                    f"'{path}/*.txt'"
                )
            texts: Iterator[str] = _prepared_texts(path, tokenizer, split)
        else:
            corpus = LocalCorpus((str(path),), text_field=text_field, txt_mode=txt_mode)
            texts = _corpus_texts(corpus)
    elif isinstance(source, Sequence):
        texts = iter(source)
    else:
        raise ValueError(
            "haystack source must be a Haystack, a list of strings, a prepared directory or a "
            f"corpus path/glob; got {type(source).__name__}"
        )
    return Haystack.from_texts(texts, strip_digits=strip_digits, max_words=max_words)


# -- examples ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Needle:
    """One inserted sentence: its key, value, text and measured depth (%, see the module
    docstring)."""

    key: str
    value: str
    text: str
    depth: float


@dataclasses.dataclass(frozen=True)
class NeedleExample:
    """A prompt and what a correct continuation contains.

    ``answers``: the expected values in the order asked (``Q·V`` strings); ``queries``: the
    asked keys; ``needles``: every inserted needle in prompt order; ``num_tokens``:
    ``len(tokenizer.encode(prompt))``; ``length`` / ``depth``: what was requested.
    """

    prompt: str
    answers: tuple[str, ...]
    queries: tuple[str, ...]
    needles: tuple[Needle, ...]
    num_tokens: int
    length: int
    depth: float | None
    completion: str  # answer_text(answers, config.answer_prefix)

    @property
    def text(self) -> str:
        """The training document: ``prompt + completion + "\\n"``."""
        return self.prompt + self.completion + "\n"


def answer_text(answers: Sequence[str], prefix: str = " ") -> str:
    """The completion of a prompt: ``prefix + ", ".join(answers)`` (``prefix`` is
    ``config.answer_prefix``, RULER's ``" "`` by default)."""
    return prefix + ", ".join(answers)


def query_text(keys: Sequence[str]) -> str:
    """Asked keys as RULER joins them: ``"a"``, ``"a, and b"``, ``"a, b, and c"``."""
    keys = list(keys)
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + ", and " + keys[-1]


class _Layout:
    """Lays the needles into the first ``n`` words of a haystack window and measures tokens."""

    def __init__(self, config, haystack, tokenizer, start, needles, fractions, question):
        self.config, self.haystack, self.tok = config, haystack, tokenizer
        self.start, self.needles, self.fractions = start, needles, fractions
        self.question = question
        self.counts: list[int] = []  # tokens of " " + word, per window word
        self.sentence_end: list[bool] = []

    def word(self, i: int) -> str:
        return self.haystack.word(self.start + i)

    def _ensure(self, n: int) -> None:
        have = len(self.counts)
        if n <= have:
            return
        extra = max(n - have, have, 16)
        words = [self.word(i) for i in range(have, have + extra)]
        self.counts.extend(len(ids) for ids in self.tok.encode_batch([" " + w for w in words]))
        self.sentence_end.extend(bool(_SENTENCE_END.search(w)) for w in words)

    def boundaries(self, n: int) -> list[int]:
        """Boundaries ``b`` (words before the needle) allowed among ``n`` words."""
        self._ensure(n)
        if self.config.insert_at == "word":
            return list(range(n + 1))
        inner = [b for b in range(1, n) if self.sentence_end[b - 1]]
        return [0, *inner, n] if n else [0]

    def places(self, n: int) -> list[int]:
        """The boundary of each needle (in needle order) for ``n`` words."""
        allowed = self.boundaries(n)
        cum = np.concatenate([[0], np.cumsum(self.counts[:n])]) if n else np.zeros(1)
        offsets = cum[allowed]
        out = []
        for f in self.fractions:
            out.append(allowed[int(np.argmin(np.abs(offsets - f * cum[n])))])
        return out

    def words(self, n: int, partial: str = "") -> list[str]:
        """The haystack words: ``n`` whole words, then ``partial`` when non-empty."""
        self._ensure(n)
        words = [self.word(i) for i in range(n)]
        return [*words, partial] if partial else words

    def prompt(self, n: int, partial: str = "") -> tuple[str, list[int]]:
        """``(prompt, boundary of each needle)``."""
        hay = self.words(n, partial)
        places = self.places(n)
        pieces: list[str] = []
        order = sorted(range(len(places)), key=lambda j: (places[j], j))
        j = 0
        for b in range(len(hay) + 1):
            while j < len(order) and places[order[j]] == b:
                pieces.append(self.needles[order[j]][2])
                j += 1
            if b < len(hay):
                pieces.append(hay[b])
        return self.config.preamble + " ".join(pieces) + self.question, places

    def count(self, n: int, partial: str = "") -> int:
        return len(self.tok.encode(self.prompt(n, partial)[0]))


def _fit(layout: _Layout, length: int, tolerance: int) -> tuple[int, str, int]:
    """``(n whole words, partial word, tokens)`` of the fitted prompt (module docstring)."""
    base = layout.count(0)
    if base > length:
        raise ValueError(
            f"length={length} tokens is shorter than the preamble, needles and question alone "
            f"({base} tokens with this tokenizer); use length >= {base + tolerance}"
        )
    # start at the estimate base + Σ per-word counts (exact for bytes), then gallop and bisect
    budget, n, used = length - base, 0, 0
    while n < length:  # (a hint only: at most `length` words)
        layout._ensure(n + 1)
        if used + layout.counts[n] > budget:
            break
        used, n = used + layout.counts[n], n + 1
    step = 1
    if layout.count(n) <= length:  # count(lo) <= length < count(hi)
        lo = n
        while layout.count(lo + step) <= length:
            lo, step = lo + step, 2 * step
            if lo > 64 * (length + 64):
                raise ValueError(
                    f"the haystack words add no tokens with this tokenizer (length={length} "
                    "never reached); check the tokenizer"
                )
        hi = lo + step
    else:
        hi = n
        while hi - step > 0 and layout.count(hi - step) > length:
            hi, step = hi - step, 2 * step
        lo = max(0, hi - step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if layout.count(mid) <= length else (lo, mid)
    n, partial, tokens = lo, "", layout.count(lo)
    if length - tokens > tolerance:
        nxt = layout.word(n)
        a, b = 0, len(nxt)  # prefix of a chars fits, b chars (the whole word) does not
        while b - a > 1:
            mid = (a + b) // 2
            a, b = (mid, b) if layout.count(n, nxt[:mid]) <= length else (a, mid)
        if a:
            partial, tokens = nxt[:a], layout.count(n, nxt[:a])
    if not length - tolerance <= tokens <= length:
        raise ValueError(
            f"cannot fit the prompt to length={length} tokens within length_tolerance="
            f"{tolerance} with this tokenizer (best: {tokens} tokens); raise length_tolerance"
        )
    return n, partial, tokens


def _check_length_depth(length, depth) -> None:
    _int(length, "length", 1)
    if depth is not None and (
        isinstance(depth, bool)
        or not isinstance(depth, Real)
        or not (math.isfinite(depth) and 0 <= depth <= 100)
    ):
        raise ValueError(f"depth must be None (drawn) or a number in [0, 100] (%); got {depth!r}")


def needle_example(
    config: TextNeedleConfig,
    haystack: Haystack,
    tokenizer: Tokenizer,
    *,
    length: int,
    depth: float | None,
    seed: int,
    index: int,
) -> NeedleExample:
    """Example ``index`` of stream ``seed``: a prompt of ``length`` tokens (within
    ``config.length_tolerance`` below), needles at ``depth`` % (None: each at a random depth);
    see the module docstring for every rule."""
    config.validate()
    if not isinstance(haystack, Haystack):
        raise ValueError(
            f"haystack must be a Haystack (see load_haystack); got {type(haystack).__name__}"
        )
    if not callable(getattr(tokenizer, "encode", None)) or not callable(
        getattr(tokenizer, "encode_batch", None)
    ):
        raise ValueError(
            "tokenizer must have encode(str) and encode_batch(list[str]) (a TextTokenizer); "
            f"got {type(tokenizer).__name__}"
        )
    _check_length_depth(length, depth)
    check_seed(seed)
    index = operator.index(index)
    if index < 0:
        raise ValueError(f"index must be an int >= 0; got {index}")
    rng = np.random.default_rng([seed, index])
    k, v, q, d = config.num_keys, config.num_values, config.num_queries, config.value_digits
    keys = [config.keys[i] for i in rng.choice(len(config.keys), size=k, replace=False)]
    low = 10 ** (d - 1) if d > 1 else 1
    drawn = rng.choice(10**d - low, size=k * v, replace=False) + low
    values = [[str(int(x)) for x in drawn[i * v : (i + 1) * v]] for i in range(k)]
    asked = [int(i) for i in rng.choice(k, size=q, replace=False)]
    needles = [
        (keys[i], values[i][j], config.needle_template.format(key=keys[i], value=values[i][j]))
        for i in range(k)
        for j in range(v)
    ]
    needles = [needles[int(i)] for i in rng.permutation(len(needles))]
    fractions = rng.random(len(needles))
    if depth is not None:
        fractions[:] = float(depth) / 100.0
    start = int(rng.integers(len(haystack)))
    question = config.question_template.format(query=query_text([keys[i] for i in asked]))
    layout = _Layout(config, haystack, tokenizer, start, needles, fractions, question)
    n, partial, tokens = _fit(layout, int(length), config.length_tolerance)
    prompt, places = layout.prompt(n, partial)
    hay = layout.words(n, partial)
    total = len(tokenizer.encode(" ".join(hay))) if hay else 0
    measured = {}
    for b in set(places):
        before = len(tokenizer.encode(" ".join(hay[:b]))) if b else 0
        measured[b] = 100.0 * before / total if total else 0.0
    order = sorted(range(len(places)), key=lambda j: (places[j], j))
    answers = tuple(x for i in asked for x in values[i])
    return NeedleExample(
        prompt=prompt,
        answers=answers,
        queries=tuple(keys[i] for i in asked),
        needles=tuple(
            Needle(needles[j][0], needles[j][1], needles[j][2], measured[places[j]]) for j in order
        ),
        num_tokens=tokens,
        length=int(length),
        depth=None if depth is None else float(depth),
        completion=answer_text(answers, config.answer_prefix),
    )


def _check_grid(values, name: str, check) -> tuple:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty sequence; got {values!r}")
    for x in values:
        check(x)
    return tuple(values)


def write_needle_corpus(
    path: str | Path,
    config: TextNeedleConfig,
    haystack: Haystack,
    tokenizer: Tokenizer,
    *,
    lengths: Sequence[int],
    num_examples: int,
    seed: int,
    depths: Sequence[float] | None = None,
) -> Path:
    """Writes ``num_examples`` needle examples as a ``.jsonl`` training corpus at ``path``.

    Line ``i``: ``{"text": prompt + completion + "\\n", "answers": [...], "length": L,
    "depth": d}`` for example ``i`` of stream ``seed`` at length ``lengths[i % len(lengths)]``
    and depth ``depths[(i // len(lengths)) % len(depths)]`` (``depths=None``: every needle at
    a random depth). Train on it with ``data.task=text data.text_file=path`` (field
    ``"text"``); evaluate with another seed. Returns the path."""
    _int(num_examples, "num_examples", 1)
    lengths = _check_grid(lengths, "lengths", lambda x: _int(x, "lengths[i]", 1))
    if depths is not None:
        depths = _check_grid(depths, "depths", lambda x: _check_length_depth(1, x))
    path = Path(path)
    if path.suffix != ".jsonl":
        raise ValueError(f"path must end in .jsonl (a LocalCorpus file); got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(num_examples):
            length = lengths[i % len(lengths)]
            depth = None if depths is None else depths[(i // len(lengths)) % len(depths)]
            ex = needle_example(
                config, haystack, tokenizer, length=length, depth=depth, seed=seed, index=i
            )
            record = {
                "text": ex.text,
                "answers": list(ex.answers),
                "length": length,
                "depth": depth,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


__all__ = [
    "DEFAULT_KEYS",
    "FAMILIES",
    "FAMILY_DEFAULTS",
    "INSERT_AT",
    "NEEDLE_TEMPLATE",
    "PREAMBLE",
    "QUESTION_TEMPLATE",
    "Haystack",
    "Needle",
    "NeedleExample",
    "TextNeedleConfig",
    "answer_text",
    "load_haystack",
    "needle_example",
    "query_text",
    "write_needle_corpus",
]
