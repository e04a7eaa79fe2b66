"""grain input pipelines for training and evaluation.

Training batches are random-access: ``dataset[step]`` is a pure function of the config and
the step, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import grain
import numpy as np

from memarch.data.config import DataConfig
from memarch.data.source import SyntheticSource
from memarch.data.tasks import RECALL_TASKS, get_task, slice_config
from memarch.data.tasks import mqar_config as mqar_config  # re-exported
from memarch.data.tasks import needle_config as needle_config  # re-exported
from memarch.data.text import eval_rows, train_rows


def data_task_names() -> tuple[str, ...]:
    """Every value ``data.task`` accepts: the registered recall tasks and ``"text"``."""
    return (*RECALL_TASKS.available(), "text")


def _check_task(cfg: DataConfig) -> None:
    accepted = data_task_names()
    if cfg.task not in accepted:
        raise ValueError(f"data.task must be one of {list(accepted)}; got {cfg.task!r}")
    if cfg.task != "text" and not cfg.train_slices:
        names = ", ".join(get_task(cfg.task).slice_names)
        raise ValueError(f"data.train_slices must list at least one ({names}) slice")


def slice_source(
    cfg: DataConfig,
    seq_len: int,
    n: int,
    *,
    seed: int,
    num_examples: int,
    pad_to: int | None = None,
) -> SyntheticSource:
    """The random-access source of one slice ``(seq_len, n)`` of task ``cfg.task`` (the
    meaning of the pair is the task's ``slice_names``; see :mod:`memarch.data.tasks`)."""
    _check_task(cfg)
    if cfg.task == "text":
        raise ValueError("data.task 'text' has no (seq_len, n) slices")
    config = slice_config(cfg, seq_len, n)
    return get_task(cfg.task).source(config, seed=seed, num_examples=num_examples, pad_to=pad_to)


def prompt_len(cfg: DataConfig, seq_len: int, n: int) -> int:
    """Tokens before the first query of a slice: the key–value context ``2·N·P`` (mqar) or
    the haystack ``L − N·m`` (needle), … (the task's ``prompt_len``). Budgeted evaluation
    prefills exactly these."""
    _check_task(cfg)
    return get_task(cfg.task).prompt_len(slice_config(cfg, seq_len, n))


def train_examples(cfg: DataConfig) -> grain.MapDataset:
    """Endless shuffled mixture of the training slices, right-padded to the longest, unbatched.

    Element ``i`` is ``{"inputs": int32[L], "targets": int32[L]}``, a pure function of the
    config and ``i``; row ``r`` of training batch ``s`` is element ``s·B + r``. For task
    ``text`` elements are packed rows with ``segment_ids`` over the prepared corpus, a new
    document order each epoch (:mod:`memarch.data.text`).
    """
    _check_task(cfg)
    if cfg.task == "text":
        return grain.MapDataset.source(train_rows(cfg))
    pad_to = max(slice_config(cfg, a, b).seq_len for a, b in cfg.train_slices)
    parts = [
        grain.MapDataset.source(
            slice_source(
                cfg,
                a,
                b,
                seed=cfg.seed + 1000 * i,
                num_examples=cfg.num_train_examples,
                pad_to=pad_to,
            )
        )
        for i, (a, b) in enumerate(cfg.train_slices)
    ]
    mixed = grain.MapDataset.mix(parts) if len(parts) > 1 else parts[0]
    return mixed.shuffle(seed=cfg.seed).repeat()


def train_dataset(cfg: DataConfig, batch_size: int) -> grain.MapDataset:
    """:func:`train_examples` batched: ``dataset[step]`` is ``{"inputs", "targets", …}:
    int32[B, L]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return train_examples(cfg).batch(batch_size, drop_remainder=True)


def batch_rows(
    examples: grain.MapDataset, step: int, batch_size: int, rows: range
) -> dict[str, np.ndarray]:
    """Rows ``rows`` of training batch ``step`` (``{"inputs", "targets"}: int32[len(rows), L]``):
    what one host of a multi-host job loads for its devices."""
    items = [examples[step * batch_size + r] for r in rows]
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def text_eval_batches(cfg: DataConfig, batch_size: int):
    """Yields the scored validation rows of task ``text`` (:func:`memarch.data.text.eval_rows`),
    batched (the last batch may be smaller)."""
    _check_task(cfg)
    rows, n = eval_rows(cfg)
    ds = grain.MapDataset.source(rows)[:n].batch(batch_size)
    for i in range(len(ds)):
        yield {k: np.asarray(v) for k, v in ds[i].items()}


def eval_batches(cfg: DataConfig, seq_len: int, num_pairs: int, batch_size: int):
    """Yields test batches of one slice ``(seq_len, num_pairs)`` of task ``cfg.task`` (seeded
    by ``eval_seed``, disjoint from training; the pair means the task's ``slice_names``)."""
    src = slice_source(
        cfg, seq_len, num_pairs, seed=cfg.eval_seed, num_examples=cfg.num_eval_examples
    )
    ds = grain.MapDataset.source(src).batch(batch_size)
    for i in range(len(ds)):
        batch = ds[i]
        yield {k: np.asarray(v) for k, v in batch.items()}
