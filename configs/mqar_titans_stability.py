"""Stability: a Titans MAG hybrid (MLP memory, momentum, decay, sliding-window attention and
persistent tokens) at the mixer's *default* settings trains 2,000 steps on MQAR without NaN.

Two ``titans_mag`` layers with no mixer options (head width 16 = d_model / heads, MLP memory of
depth 2 and expansion 4, chunk 16, θ_init 0.1, momentum 0.5, forget 0.01, window 64,
4 persistent tokens), d_model 32, on the smaller MQAR slice (64 tokens, 8 pairs) at batch 8, so
that 2,000 steps fit a shared CPU (at d_model 64 a step took ~2.8 s under load). The trainer's
default ``on_nonfinite="stop"`` raises on the first non-finite loss, so a finished run is
NaN-free by construction; ``metrics.jsonl`` in the run directory holds the loss curve.

Launch: memarch train --config configs/mqar_titans_stability.py --workdir runs/titans_stability
"""

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="mqar_titans_stability",
        model=LMConfig(
            vocab_size=256,  # = data.vocab_size
            d_model=32,  # residual width
            num_heads=2,  # heads per mixer
            pattern="titans_mag,titans_mag",  # two MAG layers at the mixer's defaults
            mlp_hidden=0,  # no MLP, as in Zoology's MQAR models
        ),
        data=DataConfig(
            vocab_size=256,  # keys 1..127, values 128..255
            train_slices=((64, 8),),  # (L, pairs)
            eval_slices=((64, 8),),
            num_train_examples=20_000,  # per slice
            num_eval_examples=256,  # per slice
        ),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=100, weight_decay=0.1),
        batch_size=8,  # sequences per step
        num_steps=2_000,  # optimiser steps
        log_every=100,  # steps between logged metrics
    )
