"""Runs an ablation grid: resolve and validate every cell, skip finished ones, train the rest
in this process or in ``workers`` spawned processes, with a progress bar.

Output folder layout::

    OUT/grid.json                 the base config, the axes and the cell names
    OUT/cells/<cell>/result.json  a finished cell (see memarch.ablate.cell)
    OUT/cells/<cell>/run/         its training workdir
    OUT/jax_cache/                compiled programs shared by the cells (see use_compile_cache)
    OUT/results.csv, results.md, *.png   the report (memarch.ablate.report)

Resuming: a cell with ``result.json`` is skipped, so a grid stopped at any point is finished
by running the same command again. A finished cell whose saved config differs from the one
the grid now resolves to is an error (use another ``--out``), not silently reused.
Cells that train exactly the same model and data (same :func:`~memarch.ablate.cell.fingerprint`,
e.g. ``ratio=0`` — all attention — under every linear mixer) are trained once and the result
is written for each of them (``shared_from`` names the cell that trained).
A cell that raises is reported with its error message (:func:`failure_message`) and left
unfinished (a re-run retries it); the others still run, and :class:`GridRun` lists the
failures (``memarch ablate`` then exits with status 1).
``KeyboardInterrupt`` stops the grid at once, like a kill.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from memarch.ablate.cell import (
    config_dict,
    fingerprint,
    read_result,
    run_cell,
    use_compile_cache,
    write_json_atomic,
)
from memarch.ablate.grid import Axis, Cell, resolve_cells
from memarch.data.text import prepared_dir
from memarch.train.config import TrainConfig, config_to_json


@dataclasses.dataclass
class GridRun:
    results: list[dict]  # one per cell, in grid order (finished cells only)
    trained: list[str]  # cells trained by this call
    skipped: list[str]  # cells already finished before this call
    failed: dict[str, str]  # cell -> error message
    wall_time: float  # seconds this call took


def cell_dir(out: Path, cell: Cell) -> Path:
    return Path(out) / "cells" / cell.name


def _differences(saved: dict, now: dict, default: dict, path: str = "") -> list[str]:
    """Dotted keys where ``saved`` and ``now`` differ. A key missing from ``saved`` (a config
    field added after the cell ran) counts only if ``now`` does not hold its default."""
    out = []
    for key in sorted(set(saved) | set(now)):
        name = f"{path}{key}"
        a, b, d = saved.get(key, default.get(key)), now.get(key), default.get(key)
        if key not in saved and b == d:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, d if isinstance(d, dict) else {}, f"{name}.")
        elif a != b:
            out.append(name)
    return out


def _check_stale(cell: Cell, cfg: TrainConfig, result: dict) -> None:
    saved, now = result.get("config") or {}, config_dict(cfg)
    diff = _differences(saved, now, config_dict(TrainConfig()))
    if diff:
        raise ValueError(
            f"grid cell {cell.name} was finished with a different config ({diff} differ); "
            "use another --out or delete that cell's directory"
        )


def _prepare_text(configs: Sequence[TrainConfig]) -> None:
    """Prepares each cell's ``data.text_file`` once in this process, before its workers read
    the shards concurrently (``data.text_dir`` is prepared already)."""
    for cfg in configs:
        if cfg.data.task == "text" and cfg.data.text_file:
            prepared_dir(cfg.data)  # cached per process: each corpus is prepared once


def _stop_on_sigterm() -> None:
    """SIGTERM to the runner raises KeyboardInterrupt, so that its worker processes (whose
    trainers treat SIGTERM as a pre-emption and would carry on) are killed with it."""
    if threading.current_thread() is threading.main_thread():

        def handler(signum, frame):
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGTERM, handler)


def _summary(result: dict) -> str:
    m = result["metrics"]
    parts = [f"{k} {m[k]:.3f}" for k in ("acc_mean", "lm_loss") if k in m]
    parts.append(f"{m['wall_time_s']:.0f} s")
    return f"{result['cell']}: " + ", ".join(parts)


def _copy_result(result: dict, cell: Cell, cfg: TrainConfig) -> dict:
    out = dict(result, cell=cell.name, labels=dict(cell.labels), overrides=list(cell.overrides))
    out["config"] = config_dict(cfg)
    out["shared_from"] = result.get("shared_from", result["cell"])
    return out


def failure_message(err: BaseException) -> str:
    """``"Type: message"`` of a failed cell's exception: the error itself, without the
    traceback nor notes appended to it (such as JAX's "removed its internal frames" note)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run_grid(
    base: TrainConfig,
    axes: Sequence[Axis],
    out: str | Path,
    *,
    workers: int = 1,
    progress: bool = True,
    compile_cache: str | Path | None = "auto",
    train: bool = True,
    train_fn: Callable | None = None,
    log: Callable[[str], None] | None = None,
) -> GridRun:
    """Trains every unfinished cell of the grid ``axes`` over ``base`` into ``out``.

    ``workers=1`` trains in this process (``train_fn`` replaces
    :func:`memarch.train.trainer.train`, for tests); ``workers > 1`` runs that many spawned
    processes. All cells are resolved and validated before any training starts.
    ``train=False`` trains nothing and returns the finished cells (to report a partial grid).
    ``compile_cache``: JAX's persistent compilation cache directory (``"auto"`` =
    ``out/jax_cache``; None = off), so cells that differ only in seed compile once.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1; got {workers!r}")
    if workers > 1 and train_fn is not None:
        raise ValueError("train_fn can only be replaced with workers=1 (in-process runs)")
    start = time.perf_counter()
    resolved = resolve_cells(base, axes)  # every ValueError surfaces here
    out = Path(out)
    done: dict[str, dict] = {}
    for cell, cfg in resolved:
        result = read_result(cell_dir(out, cell))
        if result is not None:
            _check_stale(cell, cfg, result)
            done[cell.name] = result
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "base": config_dict(base),
        "axes": [
            {"name": a.name, "values": [dataclasses.asdict(v) for v in a.values]} for a in axes
        ],
        "cells": [c.name for c, _ in resolved],
    }
    write_json_atomic(out / "grid.json", manifest)
    (out / "base_config.json").write_text(config_to_json(base))

    # cells that train the same thing share one run
    groups: dict[str, list[tuple[Cell, TrainConfig]]] = {}
    for cell, cfg in resolved:
        groups.setdefault(fingerprint(cfg), []).append((cell, cfg))
    skipped = [c.name for c, _ in resolved if c.name in done]

    def finish(result: dict, members: list[tuple[Cell, TrainConfig]]) -> None:
        for cell, cfg in members:
            if cell.name == result["cell"]:
                done[cell.name] = result
            elif cell.name not in done:
                done[cell.name] = _copy_result(result, cell, cfg)
                cell_dir(out, cell).mkdir(parents=True, exist_ok=True)
                write_json_atomic(cell_dir(out, cell) / "result.json", done[cell.name])

    todo: list[tuple[Cell, TrainConfig, list]] = []
    for members in groups.values():
        finished = [done[c.name] for c, _ in members if c.name in done]
        if finished:
            finish(finished[0], members)
        else:
            cell, cfg = members[0]
            todo.append((cell, cfg, members))
    if not train:
        todo = []

    if compile_cache == "auto":
        compile_cache = out / "jax_cache"
    if compile_cache is not None and workers == 1 and todo:
        use_compile_cache(compile_cache)

    say = log or print
    bar = None
    if progress:
        bar = tqdm(total=len(resolved), initial=len(done), desc="ablate", unit="cell")
        say = tqdm.write
    trained, failed = [], {}

    def record(cell: Cell, members, result: dict | None, error: str | None) -> None:
        if error is not None:
            failed[cell.name] = error
            say(f"{cell.name}: FAILED: {error.splitlines()[0]}")
        else:
            trained.append(cell.name)
            finish(result, members)
            say(_summary(result))
        if bar is not None:
            bar.update(len(members) if error is None else 0)

    try:
        if workers == 1:
            for cell, cfg, members in todo:
                if bar is not None:
                    bar.set_postfix_str(cell.name)
                try:
                    result = run_cell(cell, cfg, cell_dir(out, cell), train_fn=train_fn)
                except Exception as err:  # noqa: BLE001 — recorded; the grid goes on
                    record(cell, members, None, failure_message(err))
                else:
                    record(cell, members, result, None)
        elif todo:
            _stop_on_sigterm()
            _prepare_text([cfg for _, cfg, _ in todo])
            ctx = multiprocessing.get_context("spawn")
            init = (use_compile_cache, (str(compile_cache),)) if compile_cache else (None, ())
            pool = cf.ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=init[0], initargs=init[1]
            )
            try:
                futures = {
                    pool.submit(run_cell, cell, cfg, cell_dir(out, cell)): (cell, members)
                    for cell, cfg, members in todo
                }
                for fut in cf.as_completed(futures):
                    cell, members = futures[fut]
                    try:
                        result = fut.result()
                    except Exception as err:  # noqa: BLE001 — recorded; the grid goes on
                        record(cell, members, None, failure_message(err))
                    else:
                        record(cell, members, result, None)
            except BaseException:  # a stop (Ctrl-C, SIGTERM): no worker may outlive the grid
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.kill()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    finally:
        if bar is not None:
            bar.close()
    results = [done[c.name] for c, _ in resolved if c.name in done]
    return GridRun(results, trained, skipped, failed, time.perf_counter() - start)


__all__ = ["GridRun", "cell_dir", "failure_message", "run_grid"]
