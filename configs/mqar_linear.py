"""MQAR, 2-layer plain linear attention at the attention config's width (d_model 64).

Launch: memarch train --config configs/mqar_linear.py [key.sub=value ...]
"""

import dataclasses
from pathlib import Path

from memarch.train.config import load_config


def get_config():
    cfg = load_config(Path(__file__).with_name("mqar_attention.py"))
    return dataclasses.replace(
        cfg,
        name="linear_attention",
        model=dataclasses.replace(cfg.model, pattern="LL"),  # two linear-attention layers
    )
