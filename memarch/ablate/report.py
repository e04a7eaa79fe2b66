"""Reports of an ablation grid: a CSV (one row per cell), a Markdown table (mean ± std over
seeds) and PNG plots (each headline metric against each swept axis, and against the share of
attention layers when that varies).

Rows are grouped by every axis except the seed axis (and the *pivot* axis, whose values become
column suffixes: with ``pivot="task"``, ``acc_mean [mqar]`` and ``lm_loss [text]`` sit in one
row per architecture). Standard deviations are population std over seeds (``np.std``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from memarch.ablate.grid import SEED_AXIS, Axis
from memarch.eval.plots import subplots

PLOT_METRICS = {"acc_mean": "recall (MQAR accuracy, mean over slices)", "lm_loss": "LM loss"}
CONSTANT = ("params", "attn_share")  # per architecture, shown once per row
_ORDER = ("acc_mean", "lm_loss", "lm_accuracy", "train_loss", "wall_time_s")


def metric_names(results: Sequence[dict]) -> list[str]:
    """All metric names of ``results``: per-slice accuracies first (in slice order), then the
    headline metrics, then the rest."""
    names: list[str] = []
    for r in results:
        names += [k for k in r["metrics"] if k not in names]

    def key(name):
        if name.startswith("acc/"):
            l, n = name[len("acc/L") :].split("_N")
            return (0, int(l), int(n), name)
        if name in _ORDER:
            return (1, _ORDER.index(name), 0, name)
        return (2, 0, 0, name)

    return sorted(names, key=key)


def flat_rows(results: Sequence[dict], axes: Sequence[Axis]) -> list[dict]:
    """One dict per cell: ``cell``, each axis label, then every metric (NaN where absent),
    then ``shared_from`` (the cell that trained it, if another one did)."""
    metrics = metric_names(results)
    rows = []
    for r in results:
        row = {"cell": r["cell"], **{a.name: r["labels"][a.name] for a in axes}}
        row.update({m: r["metrics"].get(m, math.nan) for m in metrics})
        row["shared_from"] = r.get("shared_from", "")
        rows.append(row)
    return rows


def write_csv(rows: Sequence[dict], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _group_axes(axes: Sequence[Axis], pivot: str | None) -> list[Axis]:
    return [a for a in axes if a.name not in (SEED_AXIS, pivot)]


def _finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _fmt(values: list[float], metric: str) -> str:
    if not values:
        return "–"
    if metric == "params":
        return f"{int(values[0]):,}"
    if metric == "attn_share":
        return str(Fraction(values[0]).limit_denominator(64))
    digits = 0 if metric == "wall_time_s" else 3
    mean = f"{np.mean(values):.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ± {np.std(values):.{digits}f}"


def aggregate(
    rows: Sequence[dict], axes: Sequence[Axis], metrics: Sequence[str], *, pivot: str | None = None
) -> tuple[list[str], list[list[str]]]:
    """The Markdown table's header and rows: one row per combination of the non-seed,
    non-pivot axes (grid order); metric cells are mean ± std over seeds."""
    if pivot is not None and pivot not in [a.name for a in axes]:
        raise ValueError(f"pivot {pivot!r} is not a grid axis; axes: {[a.name for a in axes]}")
    group = _group_axes(axes, pivot)
    pivots = [v.label for a in axes if a.name == pivot for v in a.values] or [None]
    hidden = (*CONSTANT, "train_loss", "lm_accuracy", "train_loop_s", "num_layers")
    metrics = [m for m in metrics if m not in hidden]
    keys = []
    for r in rows:
        k = tuple(r[a.name] for a in group)
        if k not in keys:
            keys.append(k)
    columns = []  # (pivot label, metric) with any finite value
    for p in pivots:
        for m in metrics:
            sel = [r[m] for r in rows if pivot is None or r[pivot] == p]
            if _finite(sel):
                columns.append((p, m))
    header = [a.name for a in group] + [m if p is None else f"{m} [{p}]" for p, m in columns]
    header += [m for m in CONSTANT if any(m in r for r in rows)] + ["seeds"]
    table = []
    for k in keys:
        mine = [r for r in rows if tuple(r[a.name] for a in group) == k]
        line = list(k)
        for p, m in columns:
            line.append(_fmt(_finite(r[m] for r in mine if pivot is None or r[pivot] == p), m))
        line += [_fmt(_finite(r.get(m) for r in mine), m) for m in CONSTANT if m in mine[0]]
        seeds = sorted({r.get(SEED_AXIS) for r in mine if SEED_AXIS in r})
        line.append(",".join(map(str, seeds)) if seeds else "–")
        table.append(line)
    return header, table


def markdown(header: list[str], table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def _series(rows, axes: Sequence[Axis], keep: Sequence[Axis]):
    """``{series label: rows}`` over the label combinations of ``keep`` (grid order)."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        label = ", ".join(f"{a.name}={r[a.name]}" for a in keep) or "all"
        out.setdefault(label, []).append(r)
    return out


def _stats(rows, metric):
    v = _finite(r[metric] for r in rows)
    return (float(np.mean(v)), float(np.std(v))) if v else (math.nan, math.nan)


def plot_vs_axis(rows, axes, axis: Axis, metric: str, path: Path, *, pivot=None) -> bool:
    """``metric`` (mean ± std over seeds) against the values of ``axis``, one line per
    combination of the other grouping axes. Returns False (no file) without data."""
    rows = [r for r in rows if _finite([r.get(metric, math.nan)])]
    if not rows:
        return False
    others = [a for a in _group_axes(axes, pivot) if a.name != axis.name]
    labels = [v.label for v in axis.values]
    fig, ax = subplots(6, 4)
    for name, mine in _series(rows, axes, others).items():
        pts = [
            (i, *_stats([r for r in mine if r[axis.name] == l], metric))
            for i, l in enumerate(labels)
        ]
        pts = [p for p in pts if math.isfinite(p[1])]
        x, y, e = zip(*pts, strict=True)
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=name)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(axis.name)
    ax.set_ylabel(PLOT_METRICS.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def _share_axes(rows, axes: Sequence[Axis]) -> list[Axis]:
    """The axes whose value changes ``attn_share`` with every other axis held fixed."""
    out = []
    for a in axes:
        seen: dict[tuple, set] = {}
        for r in rows:
            k = tuple(r[b.name] for b in axes if b.name != a.name)
            seen.setdefault(k, set()).add(r["attn_share"])
        if any(len(s) > 1 for s in seen.values()):
            out.append(a)
    return out


def plot_vs_attention(rows, axes, path: Path, *, pivot=None) -> bool:
    """Each headline metric (one panel each) against the share of attention layers, one line
    per combination of the grouping axes that do not set that share (e.g. the linear mixer)."""
    if "attn_share" not in rows[0] or len({r["attn_share"] for r in rows}) < 2:
        return False
    metrics = [m for m in PLOT_METRICS if _finite(r.get(m, math.nan) for r in rows)]
    if not metrics:
        return False
    keep = [a for a in _group_axes(axes, pivot) if a not in _share_axes(rows, axes)]
    shares = sorted({r["attn_share"] for r in rows})
    fig, panels = subplots(5.5 * len(metrics), 4, 1, len(metrics), squeeze=False)
    for ax, metric in zip(panels[0], metrics, strict=True):
        have = [r for r in rows if _finite([r.get(metric, math.nan)])]
        for name, mine in _series(have, axes, keep).items():
            pts = [
                (i, *_stats([r for r in mine if r["attn_share"] == s], metric))
                for i, s in enumerate(shares)
            ]
            pts = [p for p in pts if math.isfinite(p[1])]
            x, y, e = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=name)
        ticks = [str(Fraction(s).limit_denominator(64)) for s in shares]
        ax.set_xticks(range(len(shares)), ticks)
        ax.set_xlabel("share of attention layers")
        ax.set_ylabel(PLOT_METRICS[metric])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{' and '.join(PLOT_METRICS[m].split(' (')[0] for m in metrics)} "
        "vs attention share (mean ± std over seeds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def write_report(
    results: Sequence[dict],
    axes: Sequence[Axis],
    out: str | Path,
    *,
    pivot: str | None = None,
    title: str = "Ablation",
) -> dict[str, Path]:
    """Writes ``results.csv``, ``results.md`` and the plots to ``out``; returns their paths."""
    if not results:
        raise ValueError("no finished cells to report")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = flat_rows(results, axes)
    paths = {"csv": out / "results.csv", "md": out / "results.md"}
    write_csv(rows, paths["csv"])
    header, table = aggregate(rows, axes, metric_names(results), pivot=pivot)
    total = sum(_finite(r.get("wall_time_s", math.nan) for r in rows if not r["shared_from"]))
    seeds = sorted({r[SEED_AXIS] for r in rows if SEED_AXIS in r})
    text = (
        f"# {title}\n\n{len(rows)} cells; seeds: {', '.join(seeds) or 'one'}; "
        f"training wall time {total:.0f} s in all "
        "(sum over trained cells, compilation included)\n\n"
        f"{markdown(header, table)}\n"
    )
    paths["md"].write_text(text)
    for axis in _group_axes(axes, pivot):
        for metric in PLOT_METRICS:
            path = out / f"{metric}_vs_{axis.name.replace('.', '_')}.png"
            if plot_vs_axis(rows, axes, axis, metric, path, pivot=pivot):
                paths[path.stem] = path
    path = out / "vs_attention_share.png"
    if plot_vs_attention(rows, axes, path, pivot=pivot):
        paths[path.stem] = path
    return paths


__all__ = [
    "aggregate",
    "flat_rows",
    "markdown",
    "metric_names",
    "plot_vs_attention",
    "plot_vs_axis",
    "write_csv",
    "write_report",
]
