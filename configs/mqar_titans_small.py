"""Small MQAR setting for the neural memories vs linear attention at equal width (CPU-sized,
so that all five models and an outer-lr grid fit one session on a shared 2-core CPU).

Two layers of one mixer, 2 heads of key and value width 16 (linear-memory state 2·16·16 per
layer; MLP memories 2·(2·16·32), expansion 2), the same short conv (kernel 4) and output (RMSNorm,
no output gate) everywhere, one slice of 64 tokens holding 16 pairs (the most a 64-token MQAR
sequence can query), 1,500 steps at batch 32 (at 300 steps every MLP memory was still early
in learning: measured). At head width 32 linear attention already recalls 0.99 of 16 pairs
(measured), so the width is halved to make state capacity matter.

Inner step size θ_init per memory, chosen by experiments/memory_recall_probe.py (store 8 random
pairs in the bare memory, read them back; no MQAR training): recall at θ = 0.01 / 0.03 / 0.1
(width 32, 3 seeds) was Titans 0.96 / 0.83 / 0.42 (its momentum doubles the step and 0.1
overshoots through the LayerNorm), Moneta 0.92 / 0.42 / 0.12, Yaad 0.46 / 0.71 / 0.96 (its
Huber switch bounds the step), Memora 0.83 / 0.96 / 0.71. Titans uses 0.03: a first one-seed
probe tied 0.01 and 0.03 and the runs were launched before the three-seed one. Chunk size 16
for every memory (part of the model).

Moneta's step size is capped at θ_max = 0.03 (the preset allows 1.0). Its ℓq projection
W = A/‖A‖_q^{q−2} with q = 4 is homogeneous of degree −1, so large writes shrink W, the
LayerNorm of the residual memory amplifies the next gradients and the accumulator runs away
(measured on the bare memory: std of the pre-LayerNorm output falls from 0.1 at θ = 0.01 to
1e-4 at θ = 0.1, where the read is M(q) ≈ q). With θ_max = 1 the learned θ could cross that
point: at 1,500 steps one seed in three stayed on the MQAR plateau (0.056) while the other two
recalled 0.98 and 1.00; with θ_max = 0.03 every seed learns (experiments/results/
mqar_memory_small.md).
``experiments/mqar_memory.py --config configs/mqar_titans_small.py --lrs 3e-3 1e-2`` swaps
``model.pattern`` and the outer learning rate.

Derived from configs/mqar_titans.py (same models, conv, output, data sizes and optimiser),
changing only the head width, θ_init / θ_max, the slice, the learning rate and warm-up, and the
step count.

Launch: memarch train --config configs/mqar_titans_small.py model.pattern=TT
"""

import dataclasses
from pathlib import Path

from memarch.train.config import TrainConfig, load_config

HEAD_DIM = 16  # key = value width per head for every mixer (configs/mqar_titans.py: 32)
THETA_INIT = {"titans_lmm": 0.03, "moneta": 0.01, "yaad": 0.1, "memora": 0.03}  # probe-chosen
THETA_MAX = {"moneta": 0.03}  # caps the learned θ below the ℓq runaway (see above)


def get_config() -> TrainConfig:
    base = load_config(Path(__file__).with_name("mqar_titans.py"))
    options = {}
    for name, opts in base.model.mixers.items():
        changes = {"head_dim": HEAD_DIM}
        if name in THETA_INIT:
            changes["theta_init"] = THETA_INIT[name]
        if name in THETA_MAX:
            changes["theta_max"] = THETA_MAX[name]
        options[name] = dataclasses.replace(opts, **changes)
    slices = ((64, 16),)  # (L, pairs): 16 is the most a 64-token sequence can query
    return dataclasses.replace(
        base,
        name="mqar_titans_small",
        model=dataclasses.replace(base.model, mixers=options),
        data=dataclasses.replace(base.data, train_slices=slices, eval_slices=slices),
        optim=dataclasses.replace(base.optim, learning_rate=1e-2, warmup_steps=50),
        num_steps=1500,  # optimiser steps (at 300 the MLP memories were still early: measured)
    )
