"""Checks of a whole training config against the devices, run before anything is compiled.

:func:`validate` covers the training fields, the model (layer pattern and ``num_layers``
agreeing, mixer options — typed and checked when :class:`LMConfig` is made — and the sizes)
and the data (task; for text the tokenizer, vocabulary and prepared corpus; every training
*and* evaluation slice, so that a bad ``data.eval_slices`` is reported before the first step,
not after the last). Each failure is
a :class:`~memarch.errors.ConfigError` (a ``ValueError``) naming the field and what is accepted.
:func:`validate_model` also builds the model abstractly, so that each mixer's own checks of
its options against the model's sizes run too (the ablation grid does it for every cell before
training any; the trainer builds the model abstractly as its first step after ``validate``).
"""

from __future__ import annotations

from flax import nnx

from memarch.data.config import DataConfig
from memarch.data.pipeline import data_task_names
from memarch.data.tasks import get_task, slice_config
from memarch.data.text import check_text_data
from memarch.errors import ConfigError
from memarch.train.config import COMPUTE_DTYPES, ON_NONFINITE, TrainConfig
from memarch.train.mesh import check_rules, data_parallel_size, mesh_shape
from memarch.train.setup import build_model


def _positive(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}; got {value!r}")


def validate_data(data: DataConfig) -> None:
    """The data section without building any data: the task name and the sizes; for task
    ``text`` only its sizes (:func:`validate` checks its tokenizer and corpus), for a recall
    task every ``(a, b)`` of ``data.train_slices`` and ``data.eval_slices`` (each checked by its
    task, :func:`memarch.data.tasks.slice_config`)."""
    accepted = data_task_names()
    if data.task not in accepted:
        raise ConfigError(f"data.task must be one of {list(accepted)}; got {data.task!r}")
    _positive("data.vocab_size", data.vocab_size, 2)
    _positive("data.num_train_examples", data.num_train_examples)
    _positive("data.num_eval_examples", data.num_eval_examples)
    _positive("data.worker_count", data.worker_count, 0)
    if data.task == "text":
        _positive("data.seq_len", data.seq_len)
        _positive("data.text_val_every", data.text_val_every, 0)
        return
    names = ", ".join(get_task(data.task).slice_names)
    for field in ("train_slices", "eval_slices"):
        slices = getattr(data, field)
        if not slices:
            raise ConfigError(f"data.{field} must list at least one ({names}) slice")
        for s in slices:
            if not isinstance(s, tuple) or len(s) != 2:
                raise ConfigError(f"data.{field}: a slice must be a pair ({names}); got {s!r}")
            try:
                slice_config(data, *s)
            except ValueError as err:
                raise ConfigError(f"data.{field}: {err}") from None


def validate_model(cfg: TrainConfig) -> None:
    """Builds ``cfg``'s model abstractly (``nnx.eval_shape``: shapes only, no arrays, nothing
    compiled), so that every layer's mixer runs its own checks of its options and sizes.
    A ``ValueError`` or ``TypeError`` from the construction becomes a ``ConfigError``
    starting with ``model:``."""
    try:
        nnx.eval_shape(lambda: build_model(cfg))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model: {type(err).__name__}: {err}") from err


def validate(cfg: TrainConfig, num_devices: int, *, data: bool = True) -> dict[str, int]:
    """Raises ``ConfigError`` (a ``ValueError``) naming the field and the accepted values for
    a bad config. ``data=False`` skips the data section (:func:`validate_data`), for a
    trainer that takes its batches elsewhere (continual learning's fact stream).

    Returns the resolved mesh sizes ``{"data", "fsdp", "tensor"}`` for ``num_devices``.
    """
    _positive("num_steps", cfg.num_steps)
    _positive("batch_size", cfg.batch_size)
    _positive("grad_accum_steps", cfg.grad_accum_steps)
    for name in ("log_every", "eval_every"):
        _positive(name, getattr(cfg, name), 0)
    _positive("checkpoint.every", cfg.checkpoint.every, 0)
    _positive("checkpoint.keep", cfg.checkpoint.keep)
    _positive("max_consecutive_skips", cfg.max_consecutive_skips)
    _positive("profile.start_step", cfg.profile.start_step, 0)
    _positive("profile.num_steps", cfg.profile.num_steps, 0)
    end = cfg.profile.start_step + cfg.profile.num_steps
    if cfg.profile.num_steps and end > cfg.num_steps:
        raise ConfigError(
            f"profile: the traced steps [{cfg.profile.start_step}, {end}) must lie within the "
            f"run's num_steps ({cfg.num_steps}); lower profile.start_step or profile.num_steps"
        )
    if cfg.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(
            f"compute_dtype must be one of {list(COMPUTE_DTYPES)}; got {cfg.compute_dtype!r}"
        )
    if cfg.on_nonfinite not in ON_NONFINITE:
        raise ConfigError(
            f"on_nonfinite must be one of {list(ON_NONFINITE)}; got {cfg.on_nonfinite!r}"
        )
    if cfg.peak_tflops < 0:
        raise ConfigError(f"peak_tflops must be >= 0 (0 = no MFU); got {cfg.peak_tflops}")
    if cfg.model.vocab_size < cfg.data.vocab_size:
        raise ConfigError(
            f"model.vocab_size ({cfg.model.vocab_size}) must be >= data.vocab_size "
            f"({cfg.data.vocab_size})"
        )
    cfg.model.layer_names()  # pattern errors, num_layers disagreeing with the pattern
    check_rules(cfg.mesh)
    sizes = mesh_shape(cfg.mesh, num_devices)
    if cfg.batch_size % cfg.grad_accum_steps:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) must be divisible by grad_accum_steps "
            f"({cfg.grad_accum_steps})"
        )
    micro = cfg.batch_size // cfg.grad_accum_steps
    dp = data_parallel_size(cfg.mesh, sizes)
    if micro % dp:
        raise ConfigError(
            f"batch_size / grad_accum_steps = {micro} must be divisible by the data-parallel "
            f"size {dp} (mesh data × fsdp = {sizes['data']} × {sizes['fsdp']})"
        )
    if data:
        validate_data(cfg.data)
        if cfg.data.task == "text":
            try:  # tokenizer, vocabulary sizes, the prepared corpus (prepared here if need be)
                check_text_data(cfg.data, cfg.model.vocab_size)
            except ValueError as err:
                raise ConfigError(str(err)) from None
    return sizes


__all__ = ["validate", "validate_data", "validate_model"]
