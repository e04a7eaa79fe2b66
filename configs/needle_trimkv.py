"""Needle in a haystack, 2-layer TRIM-KV attention (retention gates + capacity loss) — CPU-sized.

The model of ``experiments/needle_kv_budget.py``: ``configs/mqar_trimkv.py``'s model trained on
task ``needle`` (:mod:`memarch.data.needle`): 1, 4 or 8 key→value needles hidden at random depths
in a 128-token haystack of random key-range filler, then a query per needle. The capacity loss
(budget 32 keys per layer and KV head, 25 % of L) pushes the gates to forget the filler.

Launch: memarch train --config configs/needle_trimkv.py [key.sub=value ...]
"""

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="needle_trimkv",
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
            task="needle",
            vocab_size=256,
            train_slices=((128, 1), (128, 4), (128, 8)),  # (L, needles)
            eval_slices=((128, 1), (128, 4)),
            num_train_examples=20_000,
            num_eval_examples=128,
        ),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=100, weight_decay=0.1),
        batch_size=64,
        num_steps=600,
        log_every=50,
    )
