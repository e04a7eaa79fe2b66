"""Small MQAR setting for the neural memories vs linear attention at equal width (CPU-sized,
so that all five models and an outer-lr grid fit one session on a shared 2-core CPU).

Two layers of one mixer, 2 heads of key and value width 16 (linear-memory state 2·16·16 per
layer; MLP memories 2·(2·16·32), expansion 2), the same short conv (kernel 4) and output (RMSNorm,
no output gate) everywhere, one slice of 64 tokens holding 16 pairs (the most a 64-token MQAR
sequence can query), 1,500 steps at batch 32 (at 300 steps every MLP memory was still early
in learning: measured). At head width 32 linear attention already recalls 0.99 of 16 pairs
(measured), so the width is halved to make state capacity matter.

Inner step size θ_init per memory, chosen by experiments/memory_recall_probe.py (store 8 random
pairs in the bare memory, read them back; no MQAR training): recall at θ = 0.01 / 0.03 / 0.1
(width 32, 3 seeds) was Titans 0.96 / 0.83 / 0.42 (its momentum doubles the step and 0.1
overshoots through the LayerNorm), Moneta 0.92 / 0.42 / 0.12, Yaad 0.46 / 0.71 / 0.96 (its
Huber switch bounds the step), Memora 0.83 / 0.96 / 0.71. Titans uses 0.03: a first one-seed
probe tied 0.01 and 0.03 and the runs were launched before the three-seed one. Chunk size 16
for every memory (part of the model).

Moneta's step size is capped at θ_max = 0.03 (the preset allows 1.0). Its ℓq projection
W = A/‖A‖_q^{q−2} with q = 4 is homogeneous of degree −1, so large writes shrink W, the
LayerNorm of the residual memory amplifies the next gradients and the accumulator runs away
(measured on the bare memory: std of the pre-LayerNorm output falls from 0.1 at θ = 0.01 to
1e-4 at θ = 0.1, where the read is M(q) ≈ q). With θ_max = 1 the learned θ could cross that
point: at 1,500 steps one seed in three stayed on the MQAR plateau (0.056) while the other two
recalled 0.98 and 1.00; with θ_max = 0.03 every seed learns (experiments/results/
mqar_memory_small.md).
``experiments/mqar_memory.py --config configs/mqar_titans_small.py --lrs 3e-3 1e-2`` swaps
``model.pattern`` and the outer learning rate.

Launch: memarch train --config configs/mqar_titans_small.py model.pattern=TT
"""

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig

_SAME_WIDTH = {"head_dim": 16, "short_conv": 4, "output_gate": False}
_MEMORY = dict(_SAME_WIDTH, expansion=2.0, chunk_size=16)
_THETA_INIT = {"titans_lmm": 0.03, "moneta": 0.01, "yaad": 0.1, "memora": 0.03}


def get_config() -> TrainConfig:
    return TrainConfig(
        name="mqar_titans_small",
        model=LMConfig(
            vocab_size=256,  # = data.vocab_size
            d_model=64,  # residual width
            num_heads=2,  # heads per mixer
            pattern="TT",  # two Titans LMM layers (the experiment swaps this)
            mlp_hidden=0,  # no MLP, as in Zoology's MQAR models
            mixer_options={
                **{n: dict(_MEMORY, theta_init=th) for n, th in _THETA_INIT.items()},
                "moneta": dict(_MEMORY, theta_init=_THETA_INIT["moneta"], theta_max=0.03),
                "linear_attention": dict(_SAME_WIDTH, expand_v=1.0, feature_map="identity"),
            },
        ),
        data=DataConfig(
            vocab_size=256,  # keys 1..127, values 128..255
            train_slices=((64, 16),),  # (L, pairs)
            eval_slices=((64, 16),),
            num_train_examples=20_000,  # per slice
            num_eval_examples=256,  # per slice
        ),
        optim=OptimConfig(learning_rate=1e-2, warmup_steps=50, weight_decay=0.1),
        batch_size=32,  # sequences per step
        num_steps=1500,  # optimiser steps
        log_every=100,  # steps between logged metrics
    )
