"""MQAR with more pairs than one memory holds: MoM(4, 2) + shared vs one Gated DeltaNet memory,
both with memories of 2 heads × 16 × 16 per layer (configs/mqar_mom.py), on sequences holding
32 pairs in 128 tokens and 48 pairs in 192 tokens (2 and 3 pairs per key dimension; a sequence
of L tokens holds at most L/4 pairs).

In configs/mqar_mom.py at 2,000 steps one GDN memory recalls 1.00 / 0.99 / 0.96 of 8 / 16 / 24
pairs and only its 32-pair slice (0.88) is limited by the state, so the mean hides the
comparison. Here every slice is past one memory's room. Everything else is configs/mqar_mom.py
(2 layers, short conv 4, no output gate, slow initial forgetting, aux-loss weight 0.01,
batch 64, lr 1e-2), trained for 2,000 steps (at 800 steps the recall of both models was still
rising: measured).
``experiments/mqar_mom.py --config configs/mqar_mom_many_pairs.py`` swaps ``model.pattern``.

Launch: memarch train --config configs/mqar_mom_many_pairs.py [model.pattern=GG]
"""

import dataclasses
from pathlib import Path

from memarch.train.config import TrainConfig, load_config


def get_config() -> TrainConfig:
    base = load_config(Path(__file__).with_name("mqar_mom.py"))
    slices = ((128, 32), (192, 48))  # (L, pairs): 2 and 3 pairs per key dimension of a head
    return dataclasses.replace(
        base,
        name="mqar_mom_many_pairs",
        data=dataclasses.replace(base.data, train_slices=slices, eval_slices=slices),
        num_steps=2000,  # optimiser steps
    )
