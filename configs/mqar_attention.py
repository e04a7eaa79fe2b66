"""MQAR, 2-layer softmax attention, d_model 64 — CPU-sized (the demo's upper reference).

Every mixer in the demo gets the same short causal conv (kernel 4) on q, k, v, as the
non-attention mixers of Zoology's hybrid blocks do: it lets one layer see the previous
token, so recall is learnt in hundreds rather than thousands of CPU steps.

Launch: memarch train --config configs/mqar_attention.py [key.sub=value ...]
"""

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="attention",
        model=LMConfig(
            vocab_size=256,  # = data.vocab_size
            d_model=64,  # Zoology's smallest width
            num_heads=2,  # heads per mixer
            pattern="AA",  # two attention layers
            mlp_hidden=0,  # Zoology's MQAR models have no MLP
            mixers={
                "attention": {"short_conv": 4},  # same short conv as the linear mixers
                "linear_attention": {"short_conv": 4},
            },
        ),
        data=DataConfig(
            vocab_size=256,  # keys 1..127, values 128..255
            train_slices=((64, 4), (64, 8), (128, 8), (128, 16), (128, 32)),  # (L, pairs)
            eval_slices=((64, 4), (64, 8), (128, 8), (128, 16), (128, 32)),
            num_train_examples=20_000,  # per slice
            num_eval_examples=256,  # per slice
        ),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=100, weight_decay=0.1),
        batch_size=64,  # sequences per step
        num_steps=800,  # optimiser steps
        log_every=100,  # steps between logged metrics
    )
