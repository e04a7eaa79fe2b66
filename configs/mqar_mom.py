"""MQAR: Mixture-of-Memories (4 memories, top-2, + shared) vs one Gated DeltaNet memory.

Two layers, 2 heads of key and value width 16, so every memory — each MoM memory and the single
GDN memory — holds the same, deliberately small state (2·16·16 floats per layer), which up to
32 key-value pairs must share; MoM holds 5 such memories per layer (4 routed + 1 shared), each
token writes to 3. Same short conv (kernel 4), no output gate and slow initial forgetting
everywhere (as configs/mqar_gated_family.py). With sequences of 64 tokens and at most 16 pairs
one GDN memory already recalls 0.995 (measured, 2 seeds), so the slices go to 32 pairs in 128
tokens, where a single memory runs out of room.
``experiments/mqar_mom.py`` swaps ``model.pattern`` between "MM" and "GG".

Launch: memarch train --config configs/mqar_mom.py [model.pattern=GG] [key.sub=value ...]
"""

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig

# per-memory state 2·16·16; no output gate and slow initial forgetting, as in
# configs/mqar_gated_family.py (both speed up recall in these tiny models)
_SAME_STATE = {
    "head_dim": 16,
    "expand_v": 1.0,
    "short_conv": 4,
    "output_gate": False,
    "dt_max": 1e-2,
}


def get_config() -> TrainConfig:
    return TrainConfig(
        name="mqar_mom",
        model=LMConfig(
            vocab_size=256,  # = data.vocab_size
            d_model=64,  # residual width
            num_heads=2,  # heads per mixer
            pattern="MM",  # two MoM layers (the experiment swaps in "GG")
            mlp_hidden=0,  # no MLP, as in Zoology's MQAR models
            mixers={
                "mom": dict(  # the paper's routing: 4 memories, top-2, shared memory, aux 0.01
                    base="gated_deltanet",
                    base_options=_SAME_STATE,  # each memory: a GDN memory of the same size
                    num_memories=4,
                    top_k=2,
                    shared_memory=True,
                    aux_loss_weight=0.01,
                ),
                "gated_deltanet": dict(_SAME_STATE),  # a single memory of the same size
            },
        ),
        data=DataConfig(
            vocab_size=256,  # keys 1..127, values 128..255
            train_slices=((64, 8), (128, 16), (128, 24), (128, 32)),  # (L, pairs)
            eval_slices=((64, 8), (128, 16), (128, 24), (128, 32)),
            num_train_examples=20_000,  # per slice
            num_eval_examples=256,  # per slice
        ),
        optim=OptimConfig(learning_rate=1e-2, warmup_steps=50, weight_decay=0.1),
        batch_size=64,  # sequences per step
        num_steps=800,  # optimiser steps (CPU-sized; MoM is ~2× slower per step)
        log_every=100,  # steps between logged metrics
    )
