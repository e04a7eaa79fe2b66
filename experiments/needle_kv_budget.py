"""Needle retrieval under a KV budget: TRIM-KV (per head and global) vs StreamingLLM, H2O,
SnapKV and TOVA.

    python experiments/needle_kv_budget.py [--steps 600]

Trains ``configs/needle_trimkv.py`` once (2 TRIM-KV layers, gates and capacity loss trained
jointly on 1–8 key→value needles in a 128-token haystack; :mod:`memarch.data.needle`), then
prefills each test haystack and decodes its queries with every eviction policy at budgets of
25 %, 50 % and 100 % of the sequence length (the issue's budgets), plus 6.25 % and 12.5 % where
the policies separate (:mod:`memarch.eval.kv_budget`, the same functions
as ``experiments/mqar_kv_budget.py``). One extra row spends the same memory as one global budget
("Make Each Token Count"): ``total = M · layers · KV heads`` shared by every (layer, KV head),
each capped at L. A depth sweep (one needle at 0, 25, 50, 75, 100 % depth) gives a depth × policy
table per budget. Writes experiments/results/needle_kv_budget.md and one PNG per slice.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from memarch.eval.kv_budget import (
    GLOBAL_ROW,
    baseline_policies,
    global_policy,
    kv_buffers,
    markdown_table,
    plot_recall,
    recall_by_depth,
    recall_under_budget,
)
from memarch.eval.recall import evaluate_slices
from memarch.train.config import load_config
from memarch.train.trainer import train

FRACTIONS = (0.0625, 0.125, 0.25, 0.5, 1.0)
DEPTHS = (0.0, 25.0, 50.0, 75.0, 100.0)
FULL = "full cache (no eviction, full forward)"


def policies(budget: int, seq_len: int, num_buffers: int) -> dict:
    """:func:`baseline_policies` plus the global-budget row of the same total memory."""
    out = baseline_policies(budget)
    out[GLOBAL_ROW] = global_policy(budget, seq_len, num_buffers)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval_examples", type=int, default=128, help="per slice and depth")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps, few examples")
    p.add_argument("--out", default="experiments/results/needle_kv_budget")
    args = p.parse_args()
    cfg = load_config("configs/needle_trimkv.py")
    data = dataclasses.replace(cfg.data, num_eval_examples=args.eval_examples)
    if args.quick:
        args.steps = 3
        data = dataclasses.replace(data, num_eval_examples=16)
    cfg = dataclasses.replace(cfg, num_steps=args.steps, data=data)
    t0 = time.perf_counter()
    result = train(cfg, progress=True)
    model = result.model
    train_s = time.perf_counter() - t0
    full = evaluate_slices(model, cfg.data)
    kv_heads = model.blocks[0].mixer.num_kv_heads
    buffers = kv_buffers(model)
    cols = [f"{f * 100:g}%" for f in FRACTIONS]
    name = Path(args.out).name
    lines = [
        "# Needle retrieval under a KV budget",
        "",
        f"Model: `configs/needle_trimkv.py` ({args.steps} steps, seed {cfg.seed}, "
        f"{train_s:.0f} s on CPU); final train loss {result.history[-1]['loss']:.3f}. Task: "
        f"key→value needles (V = {cfg.data.vocab_size}) at drawn depths in a haystack of random "
        "key-range filler, then one query per needle; accuracy = argmax == value at the query. "
        "Budget M = keys kept per (layer, KV head) as a percentage of L; the haystack (everything "
        "before the first query) is prefilled in one call and evicted down to M, the queries "
        "decoded token by token with eviction after each. The global row keeps "
        f"M · {len(model.blocks)} layers · {kv_heads} KV heads keys in total, ranked by "
        "retention score across all of them (each head capped at L). Chance = 1/128. One seed.",
        "",
    ]
    for length, n in cfg.data.eval_slices:
        res: dict[str, dict[str, float]] = {}
        for frac, col in zip(FRACTIONS, cols, strict=True):
            budget = int(frac * length)
            acc = recall_under_budget(model, cfg.data, length, n, policies(budget, length, buffers))
            for pol, a in acc.items():
                res.setdefault(pol, {})[col] = a
        res[FULL] = {c: full[(length, n)] for c in cols}
        png = f"{args.out}_L{length}_N{n}.png"
        plot_recall(
            res,
            cols,
            png,
            title=f"Needle retrieval under a KV budget, L={length}, {n} needle(s)",
            ylabel="needle accuracy",
        )
        lines += [
            f"## L = {length}, {n} needle(s) (drawn depths)",
            "",
            markdown_table(res, cols),
            "",
            f"![L={length}, N={n}]({Path(png).name})",
            "",
        ]
    length = cfg.data.eval_slices[0][0]
    dcols = [f"{d:g}%" for d in DEPTHS]
    lines += [f"## Depth × budget (L = {length}, one needle at a fixed depth)", ""]
    for frac in FRACTIONS:
        budget = int(frac * length)
        by_depth = recall_by_depth(
            model, cfg.data, length, DEPTHS, policies(budget, length, buffers)
        )
        table = {pol: {f"{d:g}%": a for d, a in r.items()} for pol, r in by_depth.items()}
        if frac == FRACTIONS[-1]:
            table[FULL] = {
                f"{d:g}%": evaluate_slices(
                    model, dataclasses.replace(cfg.data, needle_depth=d), [(length, 1)]
                )[(length, 1)]
                for d in DEPTHS
            }
        lines += [f"### Budget {frac * 100:g}% (M = {budget}); columns = needle depth", ""]
        lines += [markdown_table(table, dcols, row_label="policy \\ depth"), ""]
    lines.append(f"Wall time {time.perf_counter() - t0:.0f} s (`{name}`).")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out + ".md").write_text(text)


if __name__ == "__main__":
    main()
