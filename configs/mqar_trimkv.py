"""MQAR, 2-layer TRIM-KV attention (retention gates + capacity loss), d_model 64 — CPU-sized.

The model of ``experiments/mqar_kv_budget.py``: attention layers with learned retention gates
trained jointly with the backbone, the capacity loss (budget 32 keys per layer and KV head)
sown as an auxiliary loss. Same short conv and widths as ``configs/mqar_attention.py``.

Launch: memarch train --config configs/mqar_trimkv.py [key.sub=value ...]
"""

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="trimkv",
        model=LMConfig(
            vocab_size=256,
            d_model=64,
            num_heads=2,
            pattern="KK",  # two TRIM-KV attention layers
            mlp_hidden=0,
            mixers={
                "trimkv": {
                    "short_conv": 4,
                    "gate_hidden": 64,
                    "gate_bias": 6.0,  # β ≈ 0.9975 at init: trainable within a CPU-sized run
                    "capacity_budget": 32.0,  # M of the capacity loss (25% of L = 128)
                    "capacity_weight": 1.0,
                },
            },
        ),
        data=DataConfig(
            vocab_size=256,
            train_slices=((64, 8), (128, 16)),
            eval_slices=((64, 8), (128, 16)),
            num_train_examples=20_000,
            num_eval_examples=128,
        ),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=100, weight_decay=0.1),
        batch_size=64,
        num_steps=800,
        log_every=50,
    )
