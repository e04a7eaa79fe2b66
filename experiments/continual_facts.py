"""Fact-stream continual training (in the weights): forgetting with and without rehearsal.

    python experiments/continual_facts.py [--tasks 4] [--facts 32] [--exposures 20]
                                          [--eval-every 10] [--seeds 0 1]

Trains a small attention LM on ``T`` disjoint sets of random facts ``[BOS] k1 k2 → v`` in
turn (``memarch.eval.forgetting.continual_fact_training``), once without rehearsal and once
with uniform rehearsal of earlier tasks (25 % of each batch), evaluating every task every
``--eval-every`` steps. Writes the accuracy matrix, the per-task curves (first seed) and a
Markdown table of ACC / BWT / F / min-ACC / WC-ACC / WF¹⁰ (mean ± std over seeds) to
experiments/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from memarch.data.fact_stream import FactStream, FactStreamConfig, chance_accuracy
from memarch.eval import cl_metrics as cl
from memarch.eval.forgetting import continual_fact_training
from memarch.eval.plots import plot_accuracy_matrix, plot_task_curves
from memarch.models import LMConfig
from memarch.train.config import OptimConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CFG = TrainConfig(
    name="continual_facts",
    model=LMConfig(vocab_size=256, d_model=64, num_heads=4, pattern="AA"),
    optim=OptimConfig(learning_rate=3e-3, warmup_steps=10, schedule="constant", weight_decay=0.0),
    batch_size=32,
)
METRICS = ("acc", "bwt", "forgetting", "min_acc", "wc_acc", "wf10")


def metrics(result) -> dict[str, float]:
    t = result.R.shape[0]
    a, s, e = result.curves, result.steps, result.task_ends
    return {
        "acc": cl.average_accuracy(result.R),
        "bwt": cl.backward_transfer(result.R),
        "forgetting": cl.forgetting(result.R),
        "min_acc": cl.min_accuracy(a, s, e, t),
        "wc_acc": cl.worst_case_accuracy(a, s, e, t, len(s) - 1),
        "wf10": cl.windowed_forgetting(a, 10),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--facts", type=int, default=32)
    p.add_argument("--exposures", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = FactStreamConfig(
        vocab_size=256, num_tasks=a.tasks, facts_per_task=a.facts, exposures=a.exposures
    )
    arms = {
        "none": base,
        "uniform 25%": dataclasses.replace(base, rehearsal="uniform", rehearsal_fraction=0.25),
    }
    rows = {}
    for arm, fcfg in arms.items():
        per_seed = []
        for seed in a.seeds:
            cfg = dataclasses.replace(CFG, seed=seed)
            res = continual_fact_training(
                cfg, FactStream(fcfg, seed=seed), eval_every=a.eval_every, log=print
            )
            per_seed.append(metrics(res))
            if seed == a.seeds[0]:
                tag = arm.split()[0]
                plot_accuracy_matrix(res.R, out / f"continual_facts_R_{tag}.png", title=arm)
                plot_task_curves(
                    res.steps,
                    res.curves,
                    res.task_ends,
                    out / f"continual_facts_curves_{tag}.png",
                    title=f"rehearsal: {arm}",
                    chance=chance_accuracy(fcfg),
                )
                print(f"{arm}: R =\n{np.round(res.R, 3)}")
        rows[arm] = {
            k: (np.mean([m[k] for m in per_seed]), np.std([m[k] for m in per_seed]))
            for k in METRICS
        }
    head = "| rehearsal | " + " | ".join(METRICS) + " |"
    lines = [
        f"Fact stream: {a.tasks} tasks × {a.facts} facts, {a.exposures} exposures, V=256, "
        f"2-layer attention d=64, batch 32, lr 3e-3 constant, eval every {a.eval_every} steps, "
        f"seeds {a.seeds}.",
        "",
        head,
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for arm, r in rows.items():
        lines.append(f"| {arm} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in r.values()) + " |")
    table = "\n".join(lines)
    (out / "continual_facts.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
