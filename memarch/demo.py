"""The main job (the README's first command): MQAR on CPU with three tiny models.

Trains 2-layer softmax attention, plain linear attention and a linear/attention hybrid at
the same width on MQAR, then prints a Markdown table of accuracy per (sequence length,
number of pairs) and writes a PNG plot. Expected: attention ≫ linear attention, with the
hybrid close to attention. Runs in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

from memarch.eval.periodic import periodic_evaluation
from memarch.eval.plots import plot_slice_accuracy
from memarch.eval.recall import recall_table
from memarch.train.config import apply_overrides, load_config
from memarch.train.trainer import train

CONFIGS = ("mqar_attention.py", "mqar_linear.py", "mqar_hybrid.py")


def configs_dir() -> Path:
    """The repository's ``configs/`` folder (the demo runs from a checkout)."""
    here = Path(__file__).resolve().parent.parent / "configs"
    if not here.is_dir():
        raise FileNotFoundError(f"configs/ not found next to the memarch package ({here})")
    return here


def run_demo(
    out_dir: str | Path = "runs/demo", overrides: list[str] | None = None, *, progress: bool = True
) -> dict:
    """Trains the three demo configs; returns ``{name: {(L, N): accuracy}}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, times = {}, {}
    start = time.perf_counter()
    for filename in CONFIGS:
        cfg = apply_overrides(load_config(configs_dir() / filename), overrides or [])
        print(f"== training {cfg.name}: layers {cfg.model.layer_names()}", flush=True)
        res = train(  # a re-run of the demo trains again, in a new run-<n> subdirectory
            cfg,
            workdir=out / cfg.name,
            progress=progress,
            evaluate=periodic_evaluation(cfg),
            new_run=True,
        )
        results[cfg.name] = res.evals[-1]["accuracy"]
        times[cfg.name] = res.wall_time
        last = res.history[-1]
        print(f"   {res.wall_time:.0f}s, final train loss {last['loss']:.3f}", flush=True)
    table = recall_table(results)
    plot = out / "mqar_accuracy.png"
    plot_slice_accuracy(results, plot, title="MQAR accuracy, d_model 64, 2 layers")
    total = time.perf_counter() - start
    report = (
        "# MQAR demo\n\n"
        + table
        + "\n\n"
        + "\n".join(f"- {n}: {t:.0f} s" for n, t in times.items())
        + f"\n- total: {total:.0f} s\n"
    )
    (out / "results.md").write_text(report)
    print("\n" + table)
    print(f"\nplot: {plot}\ntable: {out / 'results.md'}\ntotal wall time: {total:.0f} s")
    return results


__all__ = ["run_demo"]
