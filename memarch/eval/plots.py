"""Evaluation plots (PNG, matplotlib's Agg canvas; no pyplot global state).

Recall accuracy per slice (:func:`plot_slice_accuracy`, grouped bars), and the
continual-forgetting plots of ``docs/continual_forgetting.md`` §Plots: the lower-triangular
accuracy matrix, per-task accuracy against step with task boundaries and the min-ACC level,
retention against lag on a log x-axis, and the needle depth × length heatmap. Every function
writes ``path`` and returns it (as a :class:`~pathlib.Path`). The plots a command writes into a
run directory (the continual-forgetting plots, the needle heatmap) also accept an object-store
URL (``gs://bucket/run/eval/x.png``, :mod:`memarch.train.workdir`), returned as an
``etils.epath.Path``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memarch.eval.cl_metrics import min_accuracy
from memarch.train.workdir import as_path, is_url

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    # lazy: matplotlib costs about a second at start-up, and most commands that import this
    # module (train, ablate, eval without plots) never draw
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def subplots(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs):
    """``(figure, axes)`` like ``plt.subplots`` but on a private Agg canvas: no pyplot global
    state, so saving PNGs never changes a notebook's matplotlib backend."""
    fig = _figure(width, height)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    if is_url(path):  # matplotlib writes local files only: render, then write the object
        png = io.BytesIO()
        fig.savefig(png, dpi=120, format="png")
        target = as_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png.getvalue())
        return target
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path


def _annotate(ax, grid: np.ndarray) -> None:
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            colour = "white" if value < 0.5 else "black"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)


def plot_slice_accuracy(
    results: Mapping[str, Mapping[tuple[int, int], float]],
    path: str | Path,
    *,
    title: str = "MQAR accuracy",
) -> Path:
    """Grouped bar chart of ``results[model][(L, N)] = accuracy``: one group per slice, one bar
    per model (a missing slice is left empty); saved as PNG at ``path``."""
    slices = sorted({s for r in results.values() for s in r})
    x = np.arange(len(slices))
    width = 0.8 / max(len(results), 1)
    fig, ax = subplots(1.6 * len(slices) + 3, 4)
    for i, (name, r) in enumerate(results.items()):
        ax.bar(x + i * width, [r.get(s, np.nan) for s in slices], width, label=name)
    ax.set_xticks(x + width * (len(results) - 1) / 2)
    ax.set_xticklabels([f"L={l}\nN={n}" for l, n in slices])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_accuracy_matrix(
    R, path: str | Path, *, title: str = "accuracy matrix R", labels: Sequence[str] | None = None
) -> Path:
    """Heatmap of ``R [T, T]`` (row ``i``: after task ``i``; column ``j``: task ``j``); entries
    above the diagonal (tasks not yet trained) are left blank."""
    r = np.asarray(R, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] < 1:
        raise ValueError(f"R must be a square [T, T] matrix; got shape {r.shape}")
    t = r.shape[0]
    names = [str(i + 1) for i in range(t)] if labels is None else list(labels)
    if len(names) != t:
        raise ValueError(f"labels must name the {t} tasks; got {len(names)}")
    shown = np.where(np.tril(np.ones((t, t), bool)), r, np.nan)
    fig = _figure(1.0 + 0.6 * t, 0.8 + 0.6 * t)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(shown), vmin=0, vmax=1, cmap="viridis")
    _annotate(ax, shown)
    ax.set_xticks(range(t), names)
    ax.set_yticks(range(t), names)
    ax.set_xlabel("evaluated task j")
    ax.set_ylabel("after training task i")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="accuracy")
    return _save(fig, path)


def plot_task_curves(
    steps,
    A,
    task_ends,
    path: str | Path,
    *,
    title: str = "accuracy per task",
    chance: float | None = None,
) -> Path:
    """Accuracy of every task (``A [N, T]``) against ``steps [N]``, a dotted line at each task
    end ``task_ends [T]``, and the final min-ACC level (dashed) when ``T ≥ 2``."""
    a = np.asarray(A, dtype=np.float64)
    s = np.asarray(steps)
    e = np.asarray(task_ends)
    if a.ndim != 2 or s.shape != (a.shape[0],) or e.shape != (a.shape[1],):
        raise ValueError(
            f"need A [N, T], steps [N] and task_ends [T]; got {a.shape}, {s.shape}, {e.shape}"
        )
    fig = _figure(7, 3.5)
    ax = fig.add_subplot()
    for j in range(a.shape[1]):
        ax.plot(s, a[:, j], marker=".", label=f"task {j + 1}")
    for end in e[:-1]:
        ax.axvline(end, color="grey", linestyle=":", linewidth=1)
    t = a.shape[1]
    if t >= 2 and np.any(s > e[t - 2]):
        level = min_accuracy(a, s, e, t)
        ax.axhline(level, color="black", linestyle="--", linewidth=1, label=f"min-ACC {level:.2f}")
    if chance is not None:
        ax.axhline(chance, color="red", linestyle=":", linewidth=1, label="chance")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_retention(
    curves: Mapping[str, Mapping[float, float]],
    path: str | Path,
    *,
    title: str = "retention",
    xlabel: str = "lag",
    chance: float | None = None,
) -> Path:
    """Accuracy against lag (or updates, or segments + 1) on a log x-axis, one line per
    ``curves[name] = {x: accuracy}``, with an optional chance line. Needs every ``x > 0``."""
    if not curves:
        raise ValueError("curves must hold at least one {x: accuracy} series")
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    for name, series in curves.items():
        xs = np.asarray(sorted(series), dtype=np.float64)
        if xs.size == 0 or np.any(xs <= 0):
            raise ValueError(
                f"curve {name!r}: a log x-axis needs every x > 0 (shift distances, e.g. d + 1); "
                f"got {xs.tolist()}"
            )
        ax.plot(xs, [series[x] for x in sorted(series)], marker="o", label=name)
    if chance is not None:
        ax.axhline(chance, color="red", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_needle_heatmap(
    results: Mapping[tuple[float, int], float],
    path: str | Path,
    *,
    title: str = "needle in a haystack",
) -> Path:
    """Heatmap of ``{(depth %, length): accuracy}``: depth on the y-axis, length on the x-axis
    (missing cells blank)."""
    if not results:
        raise ValueError("results must hold at least one (depth, length) -> accuracy entry")
    depths = sorted({d for d, _ in results})
    lengths = sorted({n for _, n in results})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for (d, n), acc in results.items():
        grid[depths.index(d), lengths.index(n)] = acc
    fig = _figure(1.5 + 0.8 * len(lengths), 1.0 + 0.45 * len(depths))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    _annotate(ax, grid)
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("context length")
    ax.set_ylabel("needle depth (%)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="accuracy")
    return _save(fig, path)


__all__ = [
    "plot_accuracy_matrix",
    "plot_needle_heatmap",
    "plot_retention",
    "plot_slice_accuracy",
    "plot_task_curves",
    "subplots",
]
