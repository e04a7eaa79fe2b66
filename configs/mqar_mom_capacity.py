"""MQAR where state capacity binds: MoM(4, 2) + shared vs one Gated DeltaNet memory, both with
memories of 2 heads × 8 × 8 per layer.

configs/mqar_mom.py (head width 16, up to 32 pairs) left a single GDN memory near its ceiling on
most slices (0.99 at 8 pairs, 0.93 at 16) and the comparison tied. Here the per-memory state is
4× smaller (2·8·8 = 128 floats per layer) and every slice holds at least twice as many pairs as
a head has key dimensions (16 pairs in 64 tokens, 32 pairs in 128 tokens), so one memory
saturates and extra memories can only help through routing. Everything else as
configs/mqar_mom.py (2 layers, same short conv, no output gate, slow initial forgetting,
aux-loss weight 0.01), at batch 32 and 600 steps to fit three seeds on a shared CPU.
``experiments/mqar_mom.py --config configs/mqar_mom_capacity.py`` swaps ``model.pattern``.

Launch: memarch train --config configs/mqar_mom_capacity.py [model.pattern=GG]
"""

import dataclasses
from pathlib import Path

from memarch.train.config import TrainConfig, load_config

HEAD_DIM = 8  # per-memory state 2 heads × 8 × 8 per layer (configs/mqar_mom.py: 16)


def get_config() -> TrainConfig:
    base = load_config(Path(__file__).with_name("mqar_mom.py"))
    gdn, mom = (base.model.mixers[n] for n in ("gated_deltanet", "mom"))
    options = {
        "gated_deltanet": dataclasses.replace(gdn, head_dim=HEAD_DIM),
        "mom": dataclasses.replace(
            mom, base_options={**dict(mom.base_options), "head_dim": HEAD_DIM}
        ),
    }
    slices = ((64, 16), (128, 32))  # (L, pairs): pairs ≥ 2 × head width
    return dataclasses.replace(
        base,
        name="mqar_mom_capacity",
        model=dataclasses.replace(base.model, mixers=options),
        data=dataclasses.replace(base.data, train_slices=slices, eval_slices=slices),
        batch_size=32,  # sequences per step
        num_steps=600,  # optimiser steps (three seeds fit a shared CPU)
    )
