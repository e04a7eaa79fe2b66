"""MQAR, 2-layer hybrid: one linear-attention layer then one attention layer (d_model 64).

Launch: memarch train --config configs/mqar_hybrid.py [key.sub=value ...]
"""

import dataclasses
from pathlib import Path

from memarch.train.config import load_config


def get_config():
    cfg = load_config(Path(__file__).with_name("mqar_attention.py"))
    return dataclasses.replace(
        cfg,
        name="hybrid",
        model=dataclasses.replace(cfg.model, pattern="LA"),  # linear attention, then attention
    )
