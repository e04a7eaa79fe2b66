"""MQAR at equal state size for the linear-attention family (CPU-sized).

Two layers of one mixer, 2 heads of key and value width 16 (state 2·16·16 = 512 floats per
layer for every mixer, small enough that 32 pairs do not fit comfortably), the same short conv
(kernel 4) and the same output (RMSNorm, no output gate) everywhere. The output gate is off
because, in these tiny two-layer models without an MLP, it delays the onset of recall by
hundreds of steps (measured: DeltaNet at (L=64, N=8) reached 0.54 accuracy in 300 steps
without it and 0.01 with it), which the CPU budget cannot afford; at scale FLA's layers keep
it. Linear attention uses the identity feature map, so it is exactly GLA without its gate.

Both gated mixers start with slow forgetting: GLA's gate bias at 4 (per-token decay 0.9989
instead of FLA's 0.958) and Gated DeltaNet's initial step dt in [1e-3, 1e-2] (log-decay at
most −0.16 per token instead of −1.6). With the library defaults, two heads are too few to
hold one slowly-forgetting head: measured at lr 1e-2, seed 0, 800 steps, mean accuracy GLA
0.074 → 0.921 and Gated DeltaNet 0.852 → 0.941 (DeltaNet 0.949, linear attention 0.946).
``experiments/mqar_gated_family.py`` swaps ``model.pattern`` over gated_deltanet / deltanet /
gla / linear_attention. Measured (3 seeds, lr 1e-2, mean over slices): on plain MQAR nothing
needs forgetting and all four are within a few points (linear attention 0.945, DeltaNet 0.928,
GLA 0.924, GDN 0.898); on forgetting MQAR (``data.overwrite_fraction=0.5``, slices up to 24
pairs) the literature's order appears: GDN 0.910 ≥ DeltaNet 0.840 ≥ GLA 0.816 ≥ linear
attention 0.806 (experiments/results/mqar_gated_family.md, mqar_forgetting_gated_family.md).

Launch: memarch train --config configs/mqar_gated_family.py model.pattern=GG
"""

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig

_SAME_STATE = {"head_dim": 16, "expand_v": 1.0, "short_conv": 4, "output_gate": False}


def get_config() -> TrainConfig:
    return TrainConfig(
        name="gated_family",
        model=LMConfig(
            vocab_size=256,  # = data.vocab_size
            d_model=64,  # residual width
            num_heads=2,  # heads per mixer
            pattern="GG",  # two Gated DeltaNet layers (the experiment swaps this)
            mlp_hidden=0,  # no MLP, as in Zoology's MQAR models
            mixers={  # equal state size and conv for every mixer of the family
                "deltanet": dict(_SAME_STATE),
                "hgrn2": dict(_SAME_STATE),
                "gla": dict(_SAME_STATE, gate_bias_init=4.0),  # slow initial forgetting
                "gated_deltanet": dict(_SAME_STATE, dt_max=1e-2),  # slow initial forgetting
                # identity φ: GLA with g = 0 is exactly this model (its ungated counterpart)
                "linear_attention": dict(_SAME_STATE, feature_map="identity"),
            },
        ),
        data=DataConfig(
            vocab_size=256,  # keys 1..127, values 128..255
            train_slices=((64, 8), (128, 16), (128, 24), (128, 32)),  # (L, pairs)
            eval_slices=((64, 8), (128, 16), (128, 24), (128, 32)),
            num_train_examples=20_000,  # per slice
            num_eval_examples=256,  # per slice
        ),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=100, weight_decay=0.1),
        batch_size=64,  # sequences per step
        num_steps=800,  # optimiser steps
        log_every=100,  # steps between logged metrics
    )
