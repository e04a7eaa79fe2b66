"""The registry of synthetic recall tasks, :data:`RECALL_TASKS`: name → :class:`TaskSpec`.

Every task is a random-access source (:class:`memarch.data.source.SyntheticSource`) whose
example ``i`` is a pure function of ``(seed, i)``, labelled on its answer positions only. A
data config (:class:`memarch.data.config.DataConfig`) lists a task's slices as pairs ``(a, b)``
whose meaning the spec names (``slice_names``):

=================  ===================  =====================================================
task               slice ``(a, b)``     source and data-config fields used
=================  ===================  =====================================================
mqar               (L, pairs)           MQAR; power_a, num_passes, overwrite_fraction
forgetting_mqar    (L, pairs)           MQAR with R = max(1, round(overwrite_fraction·N))
                                        keys re-assigned (label: latest value)
needle             (L, needles)         needle; needle_value_len, needle_depth, needle_passkey,
                                        needle_num_queries (distractors)
passkey            (L, digits)          one passkey needle of ``digits`` digits; needle_depth
selective_copy     (L, data tokens)     selective copying
induction          (L, triggers)        induction heads
set_disjointness   (first, second)      JRT set disjointness; num_passes (context repeats)
overwrite_stream   (L, keys)            key-value overwrite stream; stream_* fields
segmented_recall   (segments, C)        facts queried d segments later; segment_* fields
=================  ===================  =====================================================

Each spec gives the task's metric ingredients: ``chance`` (a uniform guess among
``answer_tokens``) and ``oracle`` (answers computed from the inputs alone, by brute force, to
be scored like a model's argmax: it must score 1.0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from memarch.data import (
    induction,
    mqar,
    needle,
    overwrite_stream,
    segmented_recall,
    selective_copy,
    set_disjointness,
)
from memarch.data.config import DataConfig
from memarch.data.source import IGNORE_INDEX, SyntheticSource
from memarch.registry import Registry


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """How to build, score and bound one recall task."""

    name: str  # registry key (DataConfig.task)
    slice_names: tuple[str, str]  # meaning of a slice (a, b), e.g. ("L", "N")
    build: Callable[[DataConfig, int, int], Any]  # (data config, a, b) -> validated config
    source: type[SyntheticSource]  # the random-access source of one slice config
    chance: Callable[[Any], float]  # config -> 1 / |answer_tokens|
    answer_tokens: Callable[[Any], np.ndarray]  # config -> int32[K] candidate answers
    oracle: Callable[[Any, np.ndarray, np.ndarray], np.ndarray]  # (cfg, inputs, targets) -> preds
    prompt_len: Callable[[Any], int]  # config -> tokens before the first labelled query


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int; got {value!r}")
    return int(value)


def mqar_config(cfg: DataConfig, seq_len: int, num_pairs: int) -> mqar.MQARConfig:
    """The MQAR slice ``(seq_len, num_pairs)`` with the data config's shared fields
    (``R = round(overwrite_fraction · N)`` re-assigned keys)."""
    if not 0.0 <= cfg.overwrite_fraction <= 1.0:
        raise ValueError(
            f"data.overwrite_fraction must be in [0, 1]; got {cfg.overwrite_fraction!r}"
        )
    mq = mqar.MQARConfig(
        vocab_size=cfg.vocab_size,
        seq_len=seq_len,
        num_pairs=num_pairs,
        power_a=cfg.power_a,
        num_passes=cfg.num_passes,
        num_overwrites=round(cfg.overwrite_fraction * _int("num_pairs", num_pairs)),
    )
    mq.validate()
    return mq


def forgetting_mqar_config(cfg: DataConfig, seq_len: int, num_pairs: int) -> mqar.MQARConfig:
    """The forgetting-MQAR slice: ``R = max(1, round(overwrite_fraction · N))`` keys are
    re-assigned; ``overwrite_fraction`` must be in ``(0, 1]``."""
    if not 0.0 < cfg.overwrite_fraction <= 1.0:
        raise ValueError(
            "data.overwrite_fraction must be in (0, 1] for task 'forgetting_mqar' (the share "
            f"of keys re-assigned a later value); got {cfg.overwrite_fraction!r}"
        )
    base = mqar_config(cfg, seq_len, num_pairs)
    fm = dataclasses.replace(base, num_overwrites=max(1, base.num_overwrites))
    fm.validate()
    return fm


def needle_config(cfg: DataConfig, seq_len: int, num_needles: int) -> needle.NeedleConfig:
    """The needle slice ``(seq_len, num_needles)`` with the data config's shared fields."""
    return needle.NeedleConfig(
        vocab_size=cfg.vocab_size,
        seq_len=seq_len,
        num_needles=num_needles,
        value_len=cfg.needle_value_len,
        depth=cfg.needle_depth,
        passkey=cfg.needle_passkey,
        num_queries=cfg.needle_num_queries,
    )


def passkey_config(cfg: DataConfig, seq_len: int, digits: int) -> needle.NeedleConfig:
    """The passkey slice ``(seq_len, digits)``: one passkey needle at ``needle_depth``."""
    return needle.NeedleConfig(
        vocab_size=cfg.vocab_size,
        seq_len=seq_len,
        num_needles=1,
        value_len=digits,
        depth=cfg.needle_depth,
        passkey=True,
    )


def mqar_answer_tokens(config: mqar.MQARConfig) -> np.ndarray:
    """The candidate answers ``[V//2, V)`` (int32) of MQAR: the value tokens."""
    return np.arange(config.vocab_size // 2, config.vocab_size, dtype=np.int32)


def mqar_oracle_predictions(
    config: mqar.MQARConfig, inputs: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Answers read from ``inputs [B, L]`` alone: at each labelled position, the token after
    the **last** occurrence of the query key at an even position of the context
    ``[0, 2NP + 2R)`` (its latest value). Returns ``int32 [B, L]``."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    ctx = config.context_len
    out = np.full(targets.shape, IGNORE_INDEX, np.int32)
    for b, pos in zip(*np.nonzero(targets != IGNORE_INDEX), strict=True):
        (where,) = np.nonzero(inputs[b, 0:ctx:2] == inputs[b, pos])
        out[b, pos] = inputs[b, 2 * where[-1] + 1]
    return out


def overwrite_stream_config(
    cfg: DataConfig, seq_len: int, num_keys: int
) -> overwrite_stream.OverwriteStreamConfig:
    """The overwrite-stream slice ``(seq_len, num_keys)`` with the ``stream_*`` fields."""
    oc = overwrite_stream.OverwriteStreamConfig(
        vocab_size=cfg.vocab_size,
        seq_len=seq_len,
        num_keys=num_keys,
        p_update=cfg.stream_p_update,
        query_prob=cfg.stream_query_prob,
        filler_ratio=cfg.stream_filler_ratio,
        unset_prob=cfg.stream_unset_prob,
        num_final_queries=cfg.stream_final_queries,
    )
    oc.validate()
    return oc


def overwrite_stream_answer_tokens(config: overwrite_stream.OverwriteStreamConfig) -> np.ndarray:
    """Value tokens ``[V//2, V)``, plus UNSET when queries may ask unwritten keys."""
    values = np.arange(config.vocab_size // 2, config.vocab_size, dtype=np.int32)
    if config.unset_prob > 0:
        values = np.concatenate([np.array([overwrite_stream.UNSET], np.int32), values])
    return values


def overwrite_stream_oracle(
    config: overwrite_stream.OverwriteStreamConfig, inputs: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Replays the two-token events of ``inputs [B, L]``: a query ``QUERY k`` is answered
    with ``k``'s latest written value (UNSET if none). Returns ``int32 [B, L]``."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    out = np.full(targets.shape, IGNORE_INDEX, np.int32)
    for b in range(inputs.shape[0]):
        latest: dict[int, int] = {}
        for e in range(inputs.shape[1] // 2):
            first, second = int(inputs[b, 2 * e]), int(inputs[b, 2 * e + 1])
            if first == overwrite_stream.QUERY:
                if targets[b, 2 * e + 1] != IGNORE_INDEX:
                    out[b, 2 * e + 1] = latest.get(second, overwrite_stream.UNSET)
            elif first >= overwrite_stream.FIRST_KEY:
                latest[first] = second
    return out


def segmented_recall_config(
    cfg: DataConfig, num_segments: int, segment_len: int
) -> segmented_recall.SegmentedRecallConfig:
    """The segmented-recall slice ``(num_segments, segment_len)`` with the ``segment_*``
    fields."""
    sc = segmented_recall.SegmentedRecallConfig(
        vocab_size=cfg.vocab_size,
        num_segments=num_segments,
        segment_len=segment_len,
        facts_per_segment=cfg.segment_facts,
        distances=tuple(cfg.segment_distances),
        queries_per_distance=cfg.segment_queries,
    )
    sc.validate()
    return sc


def segmented_recall_oracle(
    config: segmented_recall.SegmentedRecallConfig, inputs: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """At each labelled position (a queried key), the token after the key's first occurrence
    (its write; keys are distinct within a sequence). Returns ``int32 [B, L]``."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    out = np.full(targets.shape, IGNORE_INDEX, np.int32)
    for b, pos in zip(*np.nonzero(targets != IGNORE_INDEX), strict=True):
        (where,) = np.nonzero(inputs[b, :pos] == inputs[b, pos])
        out[b, pos] = inputs[b, where[0] + 1]
    return out


def _mqar_spec(name: str, build) -> TaskSpec:
    return TaskSpec(
        name=name,
        slice_names=("L", "N"),
        build=build,
        source=mqar.MQARSource,
        chance=mqar.chance_accuracy,
        answer_tokens=mqar_answer_tokens,
        oracle=mqar_oracle_predictions,
        prompt_len=lambda c: c.context_len,
    )


def _needle_spec(name: str, build, second: str) -> TaskSpec:
    return TaskSpec(
        name=name,
        slice_names=("L", second),
        build=build,
        source=needle.NeedleSource,
        chance=needle.chance_accuracy,
        answer_tokens=needle.answer_tokens,
        oracle=needle.oracle_predictions,
        prompt_len=lambda c: c.haystack_len,
    )


RECALL_TASKS: Registry[TaskSpec] = Registry("task")  # name -> spec (DataConfig.task)
RECALL_TASKS.register("mqar", _mqar_spec("mqar", mqar_config))
RECALL_TASKS.register("forgetting_mqar", _mqar_spec("forgetting_mqar", forgetting_mqar_config))
RECALL_TASKS.register("needle", _needle_spec("needle", needle_config, "needles"))
RECALL_TASKS.register("passkey", _needle_spec("passkey", passkey_config, "digits"))
RECALL_TASKS.register(
    "selective_copy",
    TaskSpec(
        name="selective_copy",
        slice_names=("L", "tokens"),
        build=lambda cfg, length, n: selective_copy.SelectiveCopyConfig(
            vocab_size=cfg.vocab_size, seq_len=length, num_tokens=n
        ),
        source=selective_copy.SelectiveCopySource,
        chance=selective_copy.chance_accuracy,
        answer_tokens=selective_copy.answer_tokens,
        oracle=selective_copy.oracle_predictions,
        prompt_len=lambda c: c.prompt_len - 1,
    ),
)
RECALL_TASKS.register(
    "induction",
    TaskSpec(
        name="induction",
        slice_names=("L", "triggers"),
        build=lambda cfg, length, n: induction.InductionConfig(
            vocab_size=cfg.vocab_size, seq_len=length, num_triggers=n
        ),
        source=induction.InductionSource,
        chance=induction.chance_accuracy,
        answer_tokens=induction.answer_tokens,
        oracle=induction.oracle_predictions,
        prompt_len=lambda c: c.prompt_len,
    ),
)
RECALL_TASKS.register(
    "set_disjointness",
    TaskSpec(
        name="set_disjointness",
        slice_names=("first", "second"),
        build=lambda cfg, a, b: set_disjointness.SetDisjointnessConfig(
            vocab_size=cfg.vocab_size, first_len=a, second_len=b, num_passes=cfg.num_passes
        ),
        source=set_disjointness.SetDisjointnessSource,
        chance=set_disjointness.chance_accuracy,
        answer_tokens=set_disjointness.answer_tokens,
        oracle=set_disjointness.oracle_predictions,
        prompt_len=lambda c: c.seq_len - 1,
    ),
)
RECALL_TASKS.register(
    "overwrite_stream",
    TaskSpec(
        name="overwrite_stream",
        slice_names=("L", "keys"),
        build=overwrite_stream_config,
        source=overwrite_stream.OverwriteStreamSource,
        chance=overwrite_stream.chance_accuracy,
        answer_tokens=overwrite_stream_answer_tokens,
        oracle=overwrite_stream_oracle,
        prompt_len=lambda c: 2,  # the first event (a query needs a written key)
    ),
)
RECALL_TASKS.register(
    "segmented_recall",
    TaskSpec(
        name="segmented_recall",
        slice_names=("segments", "C"),
        build=segmented_recall_config,
        source=segmented_recall.SegmentedRecallSource,
        chance=segmented_recall.chance_accuracy,
        answer_tokens=lambda c: np.arange(c.vocab_size // 2, c.vocab_size, dtype=np.int32),
        oracle=segmented_recall_oracle,
        prompt_len=lambda c: 2 * c.facts_per_segment,  # the first segment's writes
    ),
)
RECALL_TASKS.seal()


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``; ``ValueError`` listing the registered names otherwise."""
    return RECALL_TASKS.choice("task", name)


def slice_config(cfg: DataConfig, a: int, b: int) -> Any:
    """The validated config of slice ``(a, b)`` of task ``cfg.task``; a bad slice raises a
    ``ValueError`` naming the slice, the field and the accepted values."""
    spec = get_task(cfg.task)
    try:
        return spec.build(cfg, a, b)
    except ValueError as err:
        names = ", ".join(f"{n}={v!r}" for n, v in zip(spec.slice_names, (a, b), strict=True))
        raise ValueError(f"task {cfg.task!r} slice ({names}): {err}") from None


def uniform_predictions(
    spec: TaskSpec, config: Any, targets: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The chance baseline: a uniform draw from ``answer_tokens`` at every labelled position
    of ``targets [B, L]`` (``IGNORE_INDEX`` elsewhere). Its expected accuracy is
    ``spec.chance(config)`` since every label is one of the candidates."""
    candidates = spec.answer_tokens(config)
    draws = rng.choice(candidates, size=np.shape(targets)).astype(np.int32)
    return np.where(np.asarray(targets) != IGNORE_INDEX, draws, IGNORE_INDEX)


__all__ = [
    "RECALL_TASKS",
    "TaskSpec",
    "forgetting_mqar_config",
    "get_task",
    "mqar_config",
    "needle_config",
    "overwrite_stream_config",
    "passkey_config",
    "segmented_recall_config",
    "slice_config",
    "uniform_predictions",
]
