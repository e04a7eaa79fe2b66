"""lm-evaluation-harness model ``memarch``: any trained memarch run scored on the harness's tasks.

Command lines (``docs/evaluation.md``)::

    memarch eval --checkpoint RUN_DIR --lm-eval-tasks hellaswag,lambada_openai [--limit 100]
    python -m memarch.eval.lm_harness --model memarch \\
        --model_args checkpoint=RUN_DIR --batch_size 8 --tasks hellaswag

The harness has no plugin discovery for models, so ``lm_eval`` itself learns the name
``memarch`` by importing this module; ``python -m memarch.eval.lm_harness`` is the harness's own
command line with that import done. Model arguments: ``checkpoint`` (the run directory),
``step`` (a checkpoint; default the newest that verifies), ``max_length`` (default the run's
training length), ``bucket`` (padding multiple) and ``padding_side``; the batch size is the
harness's own ``--batch_size`` (``auto`` means memarch's default, 8).

The three request types map onto :class:`memarch.eval.lm_session.LMSession`:
``loglikelihood`` and ``loglikelihood_rolling`` one to one, ``generate_until`` with the task's
``until`` strings and ``max_gen_toks`` (greedy only: ``do_sample=True`` or a temperature > 0 is
refused, so scores of a run directory are reproducible).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from etils import epath
from lm_eval.api.model import LM as HarnessLM
from lm_eval.api.registry import register_model

from memarch.eval.lm_session import LMSession
from memarch.train.workdir import as_path

DEFAULT_MAX_GEN_TOKS = 256  # the harness's own default for generate_until


def _int_or_none(name: str, value: Any) -> int | None:
    if value is None or value == "" or value == "auto":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"model_args {name} must be an int; got {value!r}") from None


@register_model("memarch")
class MemarchHarnessLM(HarnessLM):
    """The harness's ``LM`` interface over an :class:`~memarch.eval.lm_session.LMSession`.

    Build it from a run directory (``checkpoint=…``, what ``--model_args`` gives) or around a
    session (``session=…``, from Python). ``device`` and ``max_batch_size``, which the harness
    passes to every model, are accepted and ignored (JAX places the model).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        session: LMSession | None = None,
        step: int | str | None = None,
        batch_size: int | str | None = None,
        max_length: int | str | None = None,
        bucket: int | str | None = None,
        padding_side: str | None = None,
        device: str | None = None,
        max_batch_size: int | None = None,
        **unknown: Any,
    ):
        super().__init__()
        if unknown:
            raise ValueError(
                f"model_args: unknown argument(s) {sorted(unknown)}; memarch accepts checkpoint, "
                "step, batch_size, max_length, bucket, padding_side"
            )
        if (checkpoint is None) == (session is None):
            raise ValueError(
                "model_args: give checkpoint=RUN_DIR (a `memarch train` run directory)"
            )
        if session is None:
            options = {
                k: v
                for k, v in (
                    ("batch_size", _int_or_none("batch_size", batch_size)),
                    ("bucket", _int_or_none("bucket", bucket)),
                    ("padding_side", padding_side or None),
                )
                if v is not None
            }
            session = LMSession.from_run_dir(
                checkpoint,
                step=_int_or_none("step", step),
                max_length=_int_or_none("max_length", max_length),
                **options,
            )
        self.session = session

    @property
    def tokenizer_name(self) -> str:
        return self.session.tokenizer.describe()

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.session.loglikelihood([tuple(r.args[:2]) for r in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        return self.session.loglikelihood_rolling([r.args[0] for r in requests])

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(_generation_options(r.args[1]), []).append(i)
        out: list[str] = [""] * len(requests)
        for (until, max_new), members in groups.items():
            texts = self.session.generate_until(
                [requests[i].args[0] for i in members], max_new_tokens=max_new, until=until
            )
            for i, text in zip(members, texts, strict=True):
                out[i] = text
        return out


def _generation_options(gen_kwargs: dict) -> tuple[tuple[str, ...], int]:
    """``(until strings, max_gen_toks)`` of a ``generate_until`` request; sampling refused."""
    kwargs = dict(gen_kwargs or {})
    until = kwargs.pop("until", ())
    until = (until,) if isinstance(until, str) else tuple(until or ())
    max_new = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
    do_sample = kwargs.pop("do_sample", False)
    temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
    if do_sample or temperature > 0:
        raise ValueError(
            "memarch generates greedily (reproducible scores): the task asks for sampling "
            f"(do_sample={do_sample}, temperature={temperature})"
        )
    return until, max_new


def task_manager(tasks: Sequence[str], include_path: str | None = None) -> Any:
    """A harness ``TaskManager`` that knows every name in ``tasks`` (``include_path``: a folder
    of extra task YAML files); ``ValueError`` naming the unknown ones.

    When ``include_path`` holds every requested task, the harness's own catalogue (some
    15,000 task files, tens of seconds to index) is not read."""
    from lm_eval.tasks import TaskManager

    if include_path:
        if not Path(include_path).is_dir():
            raise ValueError(f"--lm-eval-include: {include_path!r} is not a directory")
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" (nor among the tasks in {include_path})" if include_path else ""
        raise ValueError(
            f"--lm-eval-tasks: unknown lm-evaluation-harness task(s) {unknown}{where}; "
            "`lm_eval ls tasks` lists them"
        )
    return manager


def run_lm_eval(
    session: LMSession,
    tasks: Sequence[str],
    *,
    include_path: str | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    manager: Any = None,
) -> dict:
    """``lm_eval.simple_evaluate`` of ``session`` on ``tasks`` (names checked first unless a
    ``manager`` from :func:`task_manager` is given), with the harness's fixed seeds; the result
    dict gains ``"memarch"`` (source, wall time)."""
    import lm_eval

    manager = task_manager(tasks, include_path) if manager is None else manager
    start = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=MemarchHarnessLM(session=session),
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=False,
        torch_random_seed=None,
    )
    results["memarch"] = {"source": session.source, "wall_s": time.perf_counter() - start}
    return results


def results_table(results: dict) -> str:
    """Markdown: one row per (task, metric) of ``results["results"]`` with its standard error."""
    rows = ["| task | metric | value | stderr |", "|---|---|---:|---:|"]
    for task, metrics in sorted(results.get("results", {}).items()):
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            skip = name in ("alias", "sample_len") or name.endswith("_stderr")
            if skip or not isinstance(value, int | float):
                continue
            err = metrics.get(f"{name}_stderr,{filt}")
            err = f"{err:.4f}" if isinstance(err, int | float) else "—"
            label = name if filt in ("", "none") else f"{name} ({filt})"
            rows.append(f"| {task} | {label} | {value:.4f} | {err} |")
    return "\n".join(rows)


def write_results(results: dict, run_dir: str | Path) -> epath.Path:
    """``results`` as ``RUN_DIR/eval/lm_eval-<UTC time>.json`` (JSON-able parts only); the run
    directory may be an object-store URL (:func:`memarch.train.workdir.as_path`)."""
    out = as_path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"lm_eval-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    keep = {
        k: results[k]
        for k in ("results", "versions", "n-shot", "config", "memarch")
        if k in results
    }
    path.write_text(json.dumps(keep, indent=2, default=str))
    return path


def main(argv: list[str] | None = None) -> None:
    """The harness's command line with model ``memarch`` registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


__all__ = [
    "MemarchHarnessLM",
    "results_table",
    "run_lm_eval",
    "task_manager",
    "write_results",
]

if __name__ == "__main__":
    main()
