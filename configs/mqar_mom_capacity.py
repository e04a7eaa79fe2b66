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

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig

_SAME_STATE = {
    "head_dim": 8,  # per-memory state 2 heads × 8 × 8 per layer
    "expand_v": 1.0,
    "short_conv": 4,
    "output_gate": False,
    "dt_max": 1e-2,
}


def get_config() -> TrainConfig:
    return TrainConfig(
        name="mqar_mom_capacity",
        model=LMConfig(
            vocab_size=256,  # = data.vocab_size
            d_model=64,  # residual width
            num_heads=2,  # heads per mixer
            pattern="MM",  # two MoM layers (the experiment swaps in "GG")
            mlp_hidden=0,  # no MLP, as in Zoology's MQAR models
            mixer_options={
                "mom": dict(  # the paper's routing: 4 memories, top-2, shared memory, aux 0.01
                    _SAME_STATE, num_memories=4, top_k=2, shared_memory=True, aux_loss_weight=0.01
                ),
                "gated_deltanet": dict(_SAME_STATE),  # a single memory of the same size
            },
        ),
        data=DataConfig(
            vocab_size=256,  # keys 1..127, values 128..255
            train_slices=((64, 16), (128, 32)),  # (L, pairs): pairs ≥ 2 × head width
            eval_slices=((64, 16), (128, 32)),
            num_train_examples=20_000,  # per slice
            num_eval_examples=256,  # per slice
        ),
        optim=OptimConfig(learning_rate=1e-2, warmup_steps=50, weight_decay=0.1),
        batch_size=32,  # sequences per step
        num_steps=600,  # optimiser steps
        log_every=100,  # steps between logged metrics
    )
