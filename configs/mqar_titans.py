"""MQAR for the neural memories (Titans LMM, Moneta, Yaad, Memora) vs linear attention at
equal width (CPU-sized).

Two layers of one mixer, 2 heads of key and value width 32 (so the linear-memory mixers hold
2·32·32 floats per layer, and the MLP memories 2 · (2·32·64) with expansion 2), the same short
conv (kernel 4) and the same output (RMSNorm, no output gate, as in
configs/mqar_gated_family.py, where the gate delayed recall in these tiny models) everywhere.
The memories use chunk size 16 (part of the model: evaluate with the same value).
``experiments/mqar_memory.py`` swaps ``model.pattern`` over titans_lmm / moneta / yaad / memora
/ linear_attention.

Launch: memarch train --config configs/mqar_titans.py model.pattern=TT
"""

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig

_SAME_WIDTH = {"head_dim": 32, "short_conv": 4, "output_gate": False}
_MEMORY = dict(
    _SAME_WIDTH,
    expansion=2.0,  # MLP memory hidden width = 2 · 32 (Titans uses 4; 2 keeps the CPU budget)
    chunk_size=16,  # tokens per gradient anchor (Titans' b = 16)
    theta_init=0.1,  # initial inner step size
)


def get_config() -> TrainConfig:
    return TrainConfig(
        name="mqar_titans",
        model=LMConfig(
            vocab_size=256,  # = data.vocab_size
            d_model=64,  # residual width
            num_heads=2,  # heads per mixer
            pattern="TT",  # two Titans LMM layers (the experiment swaps this)
            mlp_hidden=0,  # no MLP, as in Zoology's MQAR models
            mixers={  # equal width, conv and output for every mixer compared
                **{name: dict(_MEMORY) for name in ("titans_lmm", "moneta", "yaad", "memora")},
                # identity φ, as in the gated-family config
                "linear_attention": dict(_SAME_WIDTH, expand_v=1.0, feature_map="identity"),
            },
        ),
        data=DataConfig(
            vocab_size=256,  # keys 1..127, values 128..255
            train_slices=((64, 8), (128, 16)),  # (L, pairs): the two smallest gated-family slices
            eval_slices=((64, 8), (128, 16)),
            num_train_examples=20_000,  # per slice
            num_eval_examples=256,  # per slice
        ),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=100, weight_decay=0.1),
        batch_size=32,  # sequences per step
        num_steps=600,  # optimiser steps
        log_every=100,  # steps between logged metrics
    )
