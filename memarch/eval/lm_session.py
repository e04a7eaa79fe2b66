"""Scoring and greedy generation of text with a trained language model: the engine behind the
lm-evaluation-harness adapter (:mod:`memarch.eval.lm_harness`), needle tests on real text and
recall-intensive extraction.

An :class:`LMSession` holds a model, its tokenizer and three requests, all on strings:

``loglikelihood([(context, continuation), …]) -> [(log p(continuation | context), greedy)]``
    The pair is tokenized as lm-evaluation-harness does for Hugging Face models: trailing
    whitespace of the context moves to the continuation; ``whole = encode(context +
    continuation)``, ``ctx = encode(context)``, continuation ids ``whole[len(ctx):]``. The row
    fed to the model is ``[BOS] + ctx + cont`` (BOS when the run's data added one before each
    document, or when the context is empty), and the score is ``Σ_i log softmax(logits)[cont_i]``
    over the continuation's positions; ``greedy`` is whether every continuation id is the
    argmax. The softmax covers the tokenizer's ids only (an embedding padded past the
    tokenizer never predicts its padding rows), as in training.
``loglikelihood_rolling([text, …]) -> [log p(text)]``
    The whole text's log-likelihood from BOS, in disjoint windows of at most ``max_length``
    predicted tokens, each window conditioned on the ``max_length`` tokens before it
    (lm-evaluation-harness's rolling windows with a context of 1). For a text that fits one
    window this is exactly the held-out loss computation (``−Σ CE`` of the row ``[BOS] + ids``).
``generate_until([prompt, …], max_new_tokens=n, until=(…)) -> [text, …]``
    Greedy continuation through the mixers' decode caches, cut before the first ``until``
    string (and at EOS).

Batches, padding and compiled shapes
------------------------------------
Requests are sorted by length and cut into batches of ``batch_size`` rows (short batches are
filled with dummy rows), each padded to a multiple of ``bucket`` tokens, so the jitted programs
see a bounded set of shapes whatever the requests. Scoring rows carry ``segment_ids`` (1 on the
tokens, 0 on the padding): right padding (the default) cannot change a causal model's scores,
and with ``padding_side="left"`` the padding is a separate segment, which every mixer resets
its state at and attention never crosses (the packed-sequence invariant every mixer is tested
for), so the scores are the same on either side.

Generation never pads a prompt. The rows of a generation batch share a prefilled prefix
length ``p = bucket · ⌊n / bucket⌋`` (rows are grouped by it, ``n`` the prompt's length); each row's
remaining
prompt tokens are then fed one per decode step (teacher forcing) until the row starts
generating, so every row's cache holds exactly its own prompt. The compiled shapes are
``[batch_size, p]`` for the prefill and ``[batch_size, S]`` for the decode loop, with ``S``
rounded up to a multiple of 16.

``max_length`` is the longest row the session accepts (default: the run's training length,
``data.seq_len`` for text or the longest evaluation slice for a recall task); a scoring request
longer than that is an error naming it, and generation stops at it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch.data.text import text_tokenizer
from memarch.data.tokenizers import TextTokenizer
from memarch.models.lm import LM
from memarch.train.config import TrainConfig
from memarch.train.run_dir import load_run_config, restore_run_params
from memarch.train.setup import build_model, predicted_vocab

PADDING_SIDES = ("right", "left")
DECODE_STEP_ROUND = 16  # the decode loop's length is a multiple of this


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@functools.partial(jax.jit, static_argnames=("graphdef", "num_classes"))
def _token_scores(graphdef, state, inputs, targets, segment_ids, *, num_classes):
    """``(log p(target) [B, T] float32, target == argmax [B, T] bool)`` of one batch."""
    model = nnx.merge(graphdef, state)
    logits, _ = model(inputs, segment_ids=segment_ids)
    logits = logits[..., :num_classes]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return picked, jnp.argmax(logits, axis=-1) == targets


@functools.partial(jax.jit, static_argnames=("graphdef", "num_classes", "cache_len"))
def _greedy_decode(graphdef, state, prefix, forced, num_forced, *, num_classes, cache_len):
    """Greedy decoding after a shared prefix.

    ``prefix [B, p]`` (``p`` may be 0) is prefilled; then for step ``s < S`` row ``b`` is fed
    ``forced[b, s]`` while ``s < num_forced[b]`` (the rest of its prompt), else the argmax of
    its previous logits. Returns the fed tokens ``[B, S]``: row ``b``'s generated tokens are
    ``[num_forced[b]:]``.
    """
    model = nnx.merge(graphdef, state)
    b = forced.shape[0]
    cache = model.init_cache(b, cache_len, jnp.float32)
    if prefix.shape[1]:
        logits, cache = model(prefix, cache=cache)
        last = logits[:, -1, :num_classes]
    else:  # every row has >= 1 forced token, so these logits are never used
        last = jnp.zeros((b, num_classes), jnp.float32)

    def step(carry, xs):
        last, cache = carry
        s, forced_s = xs
        token = jnp.where(s < num_forced, forced_s, jnp.argmax(last, axis=-1).astype(jnp.int32))
        logits, cache = model(token[:, None], cache=cache)
        return (logits[:, -1, :num_classes], cache), token

    steps = jnp.arange(forced.shape[1], dtype=jnp.int32)
    _, fed = jax.lax.scan(step, (last, cache), (steps, forced.T))
    return fed.T


@dataclasses.dataclass(frozen=True)
class _Row:
    """One scoring row: ``tokens`` (context + continuation ids, BOS first when used) and the
    number of continuation ids scored at its end."""

    tokens: tuple[int, ...]
    num_scored: int


def rolling_windows(
    ids: Sequence[int], prefix_id: int, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """``[(context ids, continuation ids), …]``: disjoint windows that together predict every id
    of ``ids`` exactly once. Window 1 predicts ``ids[:max_length]`` from ``[prefix_id]``; each
    later window predicts the next ``≤ max_length`` ids from the ids before them, keeping
    every row ``≤ max_length`` tokens long (context + continuation − 1)."""
    ids = list(ids)
    if not ids:
        return []
    first = min(max_length, len(ids))
    out = [([prefix_id], ids[:first])]
    done = first
    while done < len(ids):
        n = min(len(ids) - done, max_length)
        end = done + n
        start = max(0, end - max_length - 1)
        out.append((ids[start:done], ids[done:end]))
        done = end
    return out


class LMSession:
    """A language model and its tokenizer answering scoring and generation requests on text
    (see the module docstring).

    Args:
      model: the :class:`~memarch.models.lm.LM`.
      tokenizer: its :class:`~memarch.data.tokenizers.TextTokenizer`.
      max_length: longest row in tokens (context + continuation − 1, or prompt + generation).
      add_bos: start every row with the tokenizer's BOS (as training did with
        ``data.add_bos``); an empty context always starts with BOS (EOS when there is none).
      num_classes: ids the model may predict (the tokenizer's; default ``model.vocab_size``).
      batch_size: rows per compiled batch.
      bucket: rows are padded to a multiple of this many tokens.
      padding_side: ``"right"`` or ``"left"`` (scores are the same; see the module docstring).
    """

    def __init__(
        self,
        model: LM,
        tokenizer: TextTokenizer,
        *,
        max_length: int,
        add_bos: bool = True,
        num_classes: int | None = None,
        batch_size: int = 8,
        bucket: int = 64,
        padding_side: str = "right",
    ):
        for name, value in (("max_length", max_length), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 1:
            raise ValueError(f"bucket must be a positive int (tokens); got {bucket!r}")
        if padding_side not in PADDING_SIDES:
            raise ValueError(
                f"padding_side must be one of {list(PADDING_SIDES)}; got {padding_side!r}"
            )
        self.num_classes = model.vocab_size if num_classes is None else int(num_classes)
        if not 1 < self.num_classes <= model.vocab_size:
            raise ValueError(
                f"num_classes must be in [2, model.vocab_size={model.vocab_size}]; "
                f"got {num_classes}"
            )
        if tokenizer.vocab_size > self.num_classes:
            raise ValueError(
                f"the tokenizer's {tokenizer.vocab_size} ids exceed the {self.num_classes} the "
                "model predicts"
            )
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.add_bos = max_length, add_bos
        self.batch_size, self.bucket, self.padding_side = batch_size, bucket, padding_side
        self._graphdef, self._state = nnx.split(model)
        self.source = "an in-memory model"

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | Path,
        *,
        step: int | None = None,
        max_length: int | None = None,
        **options,
    ) -> LMSession:
        """The model of a ``memarch train`` run directory (newest checkpoint that verifies, or
        checkpoint ``step``) with the tokenizer its config names (``data.tokenizer``);
        ``max_length`` defaults to the run's training length (:func:`training_length`)."""
        cfg = load_run_config(run_dir)
        try:
            tokenizer = text_tokenizer(cfg.data)
        except (ValueError, OSError) as e:
            raise ValueError(
                f"{run_dir}: the run's tokenizer cannot be loaded ({e}); its config.json names "
                f"data.tokenizer={cfg.data.tokenizer!r}"
            ) from None
        model, source = restore_run_params(build_model(cfg), cfg, run_dir, step=step)
        options.setdefault("add_bos", cfg.data.add_bos)
        options.setdefault("num_classes", predicted_vocab(cfg) or cfg.model.vocab_size)
        session = cls(
            model,
            tokenizer,
            max_length=training_length(cfg) if max_length is None else max_length,
            **options,
        )
        session.source = source
        return session

    # -- tokenization -------------------------------------------------------------------

    def _bos(self) -> int:
        for name in ("bos", "eos"):
            value = getattr(self.tokenizer, f"{name}_id")
            if value is not None:
                return value
        raise ValueError(
            f"{self.tokenizer.describe()} has neither BOS nor EOS: an empty context cannot be "
            "scored (give the tokenizer a bos_id)"
        )

    def _start(self) -> list[int]:
        return [self._bos()] if self.add_bos and self.tokenizer.bos_id is not None else []

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """``(context ids, continuation ids)`` (BOS included in the context; see the module
        docstring for the rule)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context)
        cont = whole[len(ctx) :]
        ctx = self._start() + ctx
        return (ctx or [self._bos()]), cont

    # -- scoring ------------------------------------------------------------------------

    def _check_length(self, n: int, what: str) -> None:
        if n > self.max_length:
            raise ValueError(
                f"{what} is {n} tokens, longer than the model supports: max_length="
                f"{self.max_length} (the run's training length by default; pass max_length=N "
                "to allow longer rows)"
            )

    def _batches(self, order: list[int]) -> Iterator[list[int]]:
        """``order`` cut into lists of at most ``batch_size`` request indices."""
        for i in range(0, len(order), self.batch_size):
            yield order[i : i + self.batch_size]

    def score_ids(
        self, rows: Sequence[tuple[Sequence[int], Sequence[int]]]
    ) -> list[tuple[float, bool]]:
        """:meth:`loglikelihood` of token ids: ``(context ids, continuation ids)`` pairs (the
        context non-empty, BOS already in it when wanted)."""
        prepared = []
        for i, (ctx, cont) in enumerate(rows):
            if not ctx:
                raise ValueError(f"request {i}: the context ids are empty (start them with BOS)")
            if not cont:
                raise ValueError(f"request {i}: the continuation is empty (nothing to score)")
            tokens = tuple(int(t) for t in (*ctx, *cont))
            self._check_length(len(tokens) - 1, f"request {i} (context + continuation)")
            prepared.append(_Row(tokens, len(cont)))
        order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i].tokens))
        out: list[tuple[float, bool] | None] = [None] * len(prepared)
        for idx in self._batches(order):
            batch = [prepared[i] for i in idx]
            width = _round_up(max(len(r.tokens) - 1 for r in batch), self.bucket)
            inputs = np.zeros((self.batch_size, width), np.int32)
            targets = np.zeros((self.batch_size, width), np.int32)
            segments = np.zeros((self.batch_size, width), np.int32)
            spans = []
            for j, row in enumerate(batch):
                n = len(row.tokens) - 1
                lo = 0 if self.padding_side == "right" else width - n
                inputs[j, lo : lo + n] = row.tokens[:-1]
                targets[j, lo : lo + n] = row.tokens[1:]
                segments[j, lo : lo + n] = 1
                spans.append((lo + n - row.num_scored, lo + n))
            logp, greedy = _token_scores(
                self._graphdef,
                self._state,
                jnp.asarray(inputs),
                jnp.asarray(targets),
                jnp.asarray(segments),
                num_classes=self.num_classes,
            )
            logp, greedy = np.asarray(logp, np.float64), np.asarray(greedy)
            for j, (i, (a, b)) in enumerate(zip(idx, spans, strict=True)):
                out[i] = (float(logp[j, a:b].sum()), bool(greedy[j, a:b].all()))
        return out  # type: ignore[return-value]

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """``[(log p(continuation | context), continuation is greedy), …]``."""
        return self.score_ids([self.encode_pair(c, x) for c, x in requests])

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """``[log p(text), …]`` from BOS, in rolling windows of ``max_length``."""
        prefix = self._bos()
        flat, owner = [], []
        for i, text in enumerate(texts):
            for window in rolling_windows(self.tokenizer.encode(text), prefix, self.max_length):
                flat.append(window)
                owner.append(i)
        scores = self.score_ids(flat)
        totals = [0.0] * len(texts)
        for i, (logp, _) in zip(owner, scores, strict=True):
            totals[i] += logp
        return totals

    # -- generation ---------------------------------------------------------------------

    def generate_ids(
        self, prompts: Sequence[Sequence[int]], max_new_tokens: int
    ) -> list[list[int]]:
        """Greedy ``max_new_tokens`` ids after each prompt (fewer where the row would pass
        ``max_length``); no stop rule applied."""
        if (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 1
        ):
            raise ValueError(f"max_new_tokens must be a positive int; got {max_new_tokens!r}")
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} has no tokens")
            self._check_length(len(p), f"prompt {i}")
        prefix_len = {i: len(p) // self.bucket * self.bucket for i, p in enumerate(prompts)}
        order = sorted(range(len(prompts)), key=lambda i: (prefix_len[i], len(prompts[i])))
        groups: dict[int, list[int]] = {}
        for i in order:
            groups.setdefault(prefix_len[i], []).append(i)
        out: list[list[int]] = [[] for _ in prompts]
        for p, members in groups.items():
            for idx in self._batches(members):
                rest = [len(prompts[i]) - p for i in idx]
                steps = _round_up(max(rest) + max_new_tokens, DECODE_STEP_ROUND)
                prefix = np.zeros((self.batch_size, p), np.int32)
                forced = np.zeros((self.batch_size, steps), np.int32)
                num_forced = np.zeros((self.batch_size,), np.int32)
                for j, i in enumerate(idx):
                    ids = list(prompts[i])
                    prefix[j] = ids[:p]
                    forced[j, : len(ids) - p] = ids[p:]
                    num_forced[j] = len(ids) - p
                num_forced[len(idx) :] = 1  # dummy rows: a forced token 0 at step 0
                fed = _greedy_decode(
                    self._graphdef,
                    self._state,
                    jnp.asarray(prefix),
                    jnp.asarray(forced),
                    jnp.asarray(num_forced),
                    num_classes=self.num_classes,
                    cache_len=p + steps,
                )
                fed = np.asarray(fed)
                for j, i in enumerate(idx):
                    room = self.max_length - len(prompts[i])
                    start = int(num_forced[j])
                    out[i] = fed[j, start : start + min(max_new_tokens, room)].tolist()
        return out

    def generate_until(
        self, prompts: Sequence[str], *, max_new_tokens: int, until: Sequence[str] = ()
    ) -> list[str]:
        """Greedy continuation text of each prompt, cut at EOS and before the first of the
        ``until`` strings."""
        ids = [self._start() + self.tokenizer.encode(p) for p in prompts]
        return [
            decode_until(self.tokenizer, g, until) for g in self.generate_ids(ids, max_new_tokens)
        ]


def decode_until(tokenizer: TextTokenizer, ids: Sequence[int], until: Sequence[str] | str) -> str:
    """The text of generated ``ids``, cut at the tokenizer's EOS (when it has one) and before
    the first occurrence of any ``until`` string."""
    until = (until,) if isinstance(until, str) else until
    eos = getattr(tokenizer, "eos_id", None)
    ids = list(ids)
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    text = tokenizer.decode(ids)
    cuts = [text.index(stop) for stop in until if stop and stop in text]
    return text[: min(cuts)] if cuts else text


def training_length(cfg: TrainConfig) -> int:
    """The longest row a run trained on: ``data.seq_len`` for task ``text``, else the longest
    slice length of its training and evaluation slices."""
    if cfg.data.task == "text":
        return cfg.data.seq_len
    return max(a for a, _ in (*cfg.data.train_slices, *cfg.data.eval_slices))


__all__ = ["LMSession", "decode_until", "rolling_windows", "training_length"]
