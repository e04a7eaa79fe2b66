"""Continual-forgetting evaluation (``docs/continual_forgetting.md`` §Task A, §Task B, §Task C).

* :func:`evaluate_overwrite_stream` — task A: accuracy by lag (log₂ bins), by the key's
  number of earlier overwrites and by writes since; errors classified as a stale value of the
  same key, another key's value, or other (UNSET queries: false alarms);
* :func:`segmented_retention` — task B: a model reads ``S`` segments one at a time, carrying
  its mixers' caches; ``R[i, j]`` is the accuracy in segment ``i`` on facts written in
  segment ``j``. ``reset=True`` starts every segment from an empty cache (the control whose
  ``R(d ≥ 1)`` must be at chance);
* :func:`continual_fact_training` — task C: trains one model on the tasks of a
  :class:`~memarch.data.fact_stream.FactStream` in turn
  (:func:`memarch.train.continual.train_fact_stream`), scores every task with
  :func:`fact_accuracy` every ``eval_every`` steps and at every task end, and returns the
  accuracy matrix and the per-task curves for :mod:`memarch.eval.cl_metrics`.

Evaluators that only need predictions take a **predictor**: ``predict(inputs int32[B, L]) ->
int[B, L]`` (the predicted next token at every position); :func:`model_predictor` makes one
from a model (argmax of the logits), and tests use oracle and uniform predictors.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch.data.fact_stream import FactStream, fact_rows
from memarch.data.overwrite_stream import UNSET, OverwriteQuery, OverwriteStreamSource
from memarch.data.overwrite_stream import chance_accuracy as overwrite_chance
from memarch.data.segmented_recall import SegmentedRecallSource
from memarch.data.segmented_recall import chance_accuracy as segmented_chance
from memarch.data.source import IGNORE_INDEX, SyntheticSource
from memarch.eval.cl_metrics import retention_by_distance, summary
from memarch.train.config import TrainConfig
from memarch.train.continual import train_fact_stream

Predictor = Callable[[np.ndarray], np.ndarray]
ERROR_CLASSES = ("stale", "other_key", "other", "false_alarm")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")


def model_predictor(model: nnx.Module) -> Predictor:
    """``predict(inputs [B, L]) -> argmax logits [B, L]`` (one full forward pass, jitted)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, inputs):
        return jnp.argmax(nnx.merge(graphdef, state)(inputs)[0], axis=-1)

    return lambda inputs: np.asarray(run(state, jnp.asarray(inputs, jnp.int32)))


def _batches(source: SyntheticSource, batch_size: int):
    """Yields ``(indices, {"inputs", "targets"}: int32[b, L])`` over the whole source."""
    for lo in range(0, len(source), batch_size):
        idx = range(lo, min(lo + batch_size, len(source)))
        rows = [source[i] for i in idx]
        yield idx, {k: np.stack([r[k] for r in rows]) for k in ("inputs", "targets")}


def source_accuracy(predict: Predictor, source: SyntheticSource, *, batch_size: int = 64) -> float:
    """Accuracy (prediction == target) over every labelled position of ``source``."""
    _check_batch_size(batch_size)
    correct = total = 0
    for _, batch in _batches(source, batch_size):
        mask = batch["targets"] != IGNORE_INDEX
        pred = np.asarray(predict(batch["inputs"]))
        correct += int(((pred == batch["targets"]) & mask).sum())
        total += int(mask.sum())
    return correct / max(total, 1)


# --------------------------------------------------------------------------------------------
# Task A: the overwrite stream


def classify_error(prediction: int, query: OverwriteQuery) -> str:
    """``"correct"``, or the error class of a wrong ``prediction``:

    * UNSET label: ``"false_alarm"`` (the model answered for a key never written);
    * ``"stale"``: an earlier value of the same key (proactive interference);
    * ``"other_key"``: a value written to another key before the query;
    * ``"other"``: anything else (values never written, keys, UNSET for a written key …).
    """
    prediction = int(prediction)
    if prediction == query.label:
        return "correct"
    if query.unset:
        return "false_alarm"
    if prediction in query.stale_values:
        return "stale"
    if prediction in query.other_values:
        return "other_key"
    return "other"


def log2_bin(lag: int) -> int:
    """The log₂ bin ``b`` of a lag ``≥ 1``: lags ``[2^b, 2^(b+1))``."""
    if lag < 1:
        raise ValueError(f"lag must be >= 1; got {lag}")
    return int(math.floor(math.log2(lag)))


@dataclasses.dataclass
class OverwriteReport:
    """Results of :func:`evaluate_overwrite_stream` (``{bucket: (accuracy, count)}`` maps)."""

    accuracy: float  # over all queries
    num_queries: int
    chance: float  # a uniform guess over the answers
    by_lag: dict[int, tuple[float, int]]  # log₂ bin b of lag_tokens: lags [2^b, 2^(b+1))
    by_lag_events: dict[int, tuple[float, int]]  # log₂ bin of lag_events
    by_prior_updates: dict[int, tuple[float, int]]  # earlier overwrites of the key
    by_writes_since: dict[int, tuple[float, int]]  # log₂ bin of 1 + writes of other keys since
    errors: dict[str, int]  # ERROR_CLASSES -> count
    false_alarm_rate: float  # wrong answers on UNSET queries / UNSET queries (nan if none)

    def error_fractions(self) -> dict[str, float]:
        """Each error class's share of all errors (0 when there is no error)."""
        total = sum(self.errors.values())
        return {k: (v / total if total else 0.0) for k, v in self.errors.items()}

    def l50(self) -> int | None:
        """L50: the lower edge ``2^b`` of the first lag bin whose accuracy has fallen at least
        halfway from the first bin's accuracy to chance; None if no bin has."""
        bins = sorted(self.by_lag)
        if not bins:
            return None
        first = self.by_lag[bins[0]][0]
        half = (first + self.chance) / 2
        for b in bins[1:]:
            if self.by_lag[b][0] <= half:
                return 2**b
        return None


def _bucket(table: dict[int, list[int]], key: int, ok: bool) -> None:
    cell = table.setdefault(key, [0, 0])
    cell[0] += ok
    cell[1] += 1


def _rates(table: dict[int, list[int]]) -> dict[int, tuple[float, int]]:
    return {k: (c / n, n) for k, (c, n) in sorted(table.items())}


def evaluate_overwrite_stream(
    predict: Predictor, source: OverwriteStreamSource, *, batch_size: int = 64
) -> OverwriteReport:
    """Scores ``predict`` on every query of ``source`` and buckets the results.

    UNSET queries count in ``accuracy`` and ``false_alarm_rate`` but not in the lag /
    overwrite buckets (they have no write).
    """
    _check_batch_size(batch_size)
    by_lag: dict[int, list[int]] = {}
    by_lag_events: dict[int, list[int]] = {}
    by_updates: dict[int, list[int]] = {}
    by_since: dict[int, list[int]] = {}
    errors = dict.fromkeys(ERROR_CLASSES, 0)
    correct = total = unset = unset_wrong = 0
    for idx, batch in _batches(source, batch_size):
        pred = np.asarray(predict(batch["inputs"]))
        for row, i in enumerate(idx):
            for q in source.queries(i):
                cls = classify_error(pred[row, q.position], q)
                ok = cls == "correct"
                correct += ok
                total += 1
                if not ok:
                    errors[cls] += 1
                if q.unset:
                    unset += 1
                    unset_wrong += not ok
                    continue
                _bucket(by_lag, log2_bin(q.lag_tokens), ok)
                _bucket(by_lag_events, log2_bin(q.lag_events), ok)
                _bucket(by_updates, q.prior_updates, ok)
                _bucket(by_since, log2_bin(1 + q.writes_since), ok)
    return OverwriteReport(
        accuracy=correct / max(total, 1),
        num_queries=total,
        chance=overwrite_chance(source.config),
        by_lag=_rates(by_lag),
        by_lag_events=_rates(by_lag_events),
        by_prior_updates=_rates(by_updates),
        by_writes_since=_rates(by_since),
        errors=errors,
        false_alarm_rate=unset_wrong / unset if unset else math.nan,
    )


# --------------------------------------------------------------------------------------------
# Task B: segmented retention


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _segment_step(graphdef, state, cache, tokens):
    logits, cache = nnx.merge(graphdef, state)(tokens, cache=cache)
    return logits, cache


def segmented_logits(
    model: nnx.Module, inputs: jax.Array, segment_len: int, *, reset: bool = False
) -> jax.Array:
    """Runs ``inputs [B, S·C]`` one segment of ``C`` tokens at a time: ``logits [B, S·C, V]``.

    Each segment is a cached prefill ``model(x_s, cache=cache)``; the caches (every mixer's
    memory) are carried to the next segment, so the result equals one forward pass over the
    whole sequence. ``reset=True`` starts each segment from ``model.init_cache`` instead: no
    information crosses a boundary, and segment ``s`` equals a forward pass over it alone.
    """
    inputs = jnp.asarray(inputs, jnp.int32)
    if inputs.ndim != 2 or segment_len < 1 or inputs.shape[1] % segment_len:
        raise ValueError(
            f"inputs must be [B, S·segment_len] with segment_len={segment_len} >= 1; "
            f"got {inputs.shape}"
        )
    b, total = inputs.shape
    graphdef, state = nnx.split(model)
    cache = None
    out = []
    for lo in range(0, total, segment_len):
        if reset or cache is None:
            cache = model.init_cache(b, total, jnp.float32)
        logits, cache = _segment_step(graphdef, state, cache, inputs[:, lo : lo + segment_len])
        out.append(logits)
    return jnp.concatenate(out, axis=1)


@dataclasses.dataclass
class RetentionReport:
    """Results of :func:`segmented_retention`."""

    R: np.ndarray  # [S, S]: accuracy in segment i on facts of segment j (NaN: not asked)
    counts: np.ndarray  # [S, S] int: queries behind each entry
    correct: np.ndarray  # [S, S] int: correct answers among them
    by_distance: dict[int, float]  # R(d) = mean_i R[i + d, i]
    chance: float
    reset: bool

    def pooled_by_distance(self) -> dict[int, float]:
        """Accuracy over all queries at distance ``d`` (weighted by count, not by segment)."""
        out = {}
        for d in range(self.R.shape[0]):
            n = np.diagonal(self.counts, offset=-d).sum()
            if n:
                out[d] = float(np.diagonal(self.correct, offset=-d).sum() / n)
        return out


def segmented_retention(
    model: nnx.Module,
    source: SegmentedRecallSource,
    *,
    reset: bool = False,
    batch_size: int = 16,
) -> RetentionReport:
    """``R[i, j]`` over the queries of ``source`` read segment by segment (see
    :func:`segmented_logits`); ``reset=True`` is the memory-reset control."""
    _check_batch_size(batch_size)
    s = source.config.num_segments
    ok = np.zeros((s, s), dtype=np.int64)
    n = np.zeros((s, s), dtype=np.int64)
    for idx, batch in _batches(source, batch_size):
        logits = segmented_logits(model, batch["inputs"], source.config.segment_len, reset=reset)
        pred = np.asarray(jnp.argmax(logits, axis=-1))
        for row, i in enumerate(idx):
            q = source.queries(i)
            hit = pred[row, q["position"]] == batch["targets"][row, q["position"]]
            np.add.at(ok, (q["query_segment"], q["write_segment"]), hit)
            np.add.at(n, (q["query_segment"], q["write_segment"]), 1)
    r = np.divide(ok, n, out=np.full((s, s), np.nan), where=n > 0)
    return RetentionReport(
        R=r,
        counts=n,
        correct=ok,
        by_distance=retention_by_distance(r),
        chance=segmented_chance(source.config),
        reset=reset,
    )


# --------------------------------------------------------------------------------------------
# Task C: fact-stream continual training


@dataclasses.dataclass
class ContinualResult:
    """Results of :func:`continual_fact_training` (inputs of :mod:`memarch.eval.cl_metrics`)."""

    model: nnx.Module  # the model after the last task
    R: np.ndarray  # [T, T]: accuracy on task j after training task i
    curves: np.ndarray  # [N, T]: accuracy on task j at evaluation n
    steps: np.ndarray  # [N]: training step of evaluation n (0 = at initialisation)
    task_ends: np.ndarray  # [T]: step at which training on task j ended
    baseline: np.ndarray  # [T]: accuracy at initialisation (b_j of FWT)
    losses: np.ndarray  # [total steps]: training loss per step
    metrics: dict[str, float]  # cl_metrics.summary(R)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _correct_answers(graphdef, state, inputs, targets):
    logits = nnx.merge(graphdef, state)(inputs)[0]
    return ((jnp.argmax(logits, -1) == targets) & (targets != IGNORE_INDEX)).sum()


def fact_accuracy(stream: FactStream) -> Callable[[nnx.Module, int], np.ndarray]:
    """``evaluate(model, step) -> accuracy [T]``: recall (argmax at the arrow == value) on
    every task's facts, one jitted call per task (``step`` is not used). The fact rows are
    built at the first call."""
    rows: list[dict[str, np.ndarray]] = []

    def evaluate(model: nnx.Module, step: int) -> np.ndarray:
        if not rows:
            rows.extend(fact_rows(*stream.facts(j)) for j in range(stream.config.num_tasks))
        graphdef, state = nnx.split(model)
        hits = [_correct_answers(graphdef, state, r["inputs"], r["targets"]) for r in rows]
        return np.asarray(jax.device_get(hits), dtype=np.float64) / stream.config.facts_per_task

    return evaluate


def continual_fact_training(
    cfg: TrainConfig,
    stream: FactStream,
    *,
    eval_every: int,
    log: Callable[[str], None] | None = None,
) -> ContinualResult:
    """Trains ``build_model(cfg)`` on tasks ``0 … T−1`` of ``stream`` in turn
    (:func:`memarch.train.continual.train_fact_stream`: what of ``cfg`` is used, single
    device) and scores it with :func:`fact_accuracy`.

    Evaluation of every task at step 0, every ``eval_every`` steps and at the end of every
    task; ``R[i]`` is the evaluation at the end of task ``i``. Config errors are raised before
    anything is built or compiled.
    """
    run = train_fact_stream(
        cfg, stream, eval_every=eval_every, evaluate=fact_accuracy(stream), log=log
    )
    at_end = np.searchsorted(run.steps, run.task_ends)  # the evaluation at each task end
    r = run.accuracy[at_end]  # [T, T]: row i = accuracy on every task after task i
    return ContinualResult(
        model=run.model,
        R=r,
        curves=run.accuracy,
        steps=run.steps,
        task_ends=run.task_ends,
        baseline=run.accuracy[0],
        losses=run.losses,
        metrics=summary(r),
    )


def bucket_table(report: Mapping[int, tuple[float, int]], label: str) -> str:
    """A markdown table of ``{bucket: (accuracy, count)}`` (e.g. ``report.by_lag``)."""
    rows = [f"| {label} | accuracy | queries |", "|---|---|---|"]
    rows += [f"| {k} | {a:.3f} | {n} |" for k, (a, n) in report.items()]
    return "\n".join(rows)


__all__ = [
    "ERROR_CLASSES",
    "ContinualResult",
    "OverwriteReport",
    "RetentionReport",
    "UNSET",
    "bucket_table",
    "classify_error",
    "continual_fact_training",
    "fact_accuracy",
    "evaluate_overwrite_stream",
    "log2_bin",
    "model_predictor",
    "segmented_logits",
    "segmented_retention",
    "source_accuracy",
]
