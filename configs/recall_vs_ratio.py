"""Hybrid-ratio ablation at CPU scale: 4-layer Gated DeltaNet / GLA hybrids with r linear layers
per softmax-attention layer (3:1, 1:1), all attention and pure linear; recall on MQAR and
language-modelling loss on real text (tiny Shakespeare, bytes), each from its own training run.

The ratio maps onto the layer-pattern machinery (:func:`memarch.models.pattern.ratio_pattern`):
``model.pattern=None``, ``model.num_layers=4``, ``model.ratio=r``, ``model.linear_mixer`` and
``placement="last"`` (attention closes each group of r + 1 layers): r = 3 -> ``LLLA``,
1 -> ``LALA``, 0 -> all attention, 4 -> no attention layer at all (the group of 5 never reaches
its attention slot over 4 layers), i.e. pure linear. ``model.num_layers=8`` with
``model.ratio=7`` gives 7:1 (pure linear is then ``ratio=8``); the 8-layer grid did not fit the
CPU budget (below).

Both tasks use one architecture (the same parameter count: the byte vocabulary, 258, sizes the
embedding in both); ``GRID``'s ``task`` axis switches the data: MQAR (keys and values drawn
from a 64-token sub-vocabulary) or packed byte-level text (its own batch and step count).
Linear layers have a small state (2 heads × 8 × 8 = 128 floats per layer) so that 16 pairs
overflow it while one attention layer (KV cache 2·d·L) holds them. The gated mixers follow
configs/mqar_gated_family.py (slow initial forgetting, no output gate); chunk 16 is the fastest
chunk length for these sequence lengths on CPU (measured on 8 GDN layers, 32 × 64 tokens:
0.13 s/step against 0.23 s with chunk 64 and 0.26 s with the token scan).

Measured while choosing the size (2 busy CPU cores): 8-layer models with d_model 32 and 32
sequences per step were still on the MQAR plateau (loss ≈ ln 32) after 600 steps at lr 3e-3
and 1e-2, as was d_model 64 without MLP after 400 × 32; 128 sequences per step cost > 1.5 s
per step there, so 8 layers × 3 seeds × 2 tasks did not fit an hour. Hence 4 layers, d_model
64, 600 × 64 MQAR sequences.

Run (see experiments/recall_vs_ratio/README.md):
    memarch ablate --config configs/recall_vs_ratio.py --grid-file configs/recall_vs_ratio.py \
        --pivot task --out experiments/recall_vs_ratio/results --workers 2
Tiny variant (2 layers, a few steps; the test suite's smoke run): ``--tiny``.
Pod scale: configs/recall_vs_ratio_pod.py.
"""

import dataclasses

from memarch.data.corpus import find_corpus
from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig

_LINEAR = {"head_dim": 8, "expand_v": 1.0, "short_conv": 4, "output_gate": False, "chunk_size": 16}
SLICES = ((32, 4), (64, 8), (64, 16))  # (L, pairs)

# axis order = run order: seed first, so every architecture gets seed 0 before any gets seed 1
GRID = {
    "seed": [0, 1, 2],
    "task": {
        "mqar": {"data.task": "mqar", "data.vocab_size": 64},
        # text: shorter runs of smaller batches (the byte LM's loss flattens early at this size)
        "text": {"data.task": "text", "data.vocab_size": 258, "batch_size": 32, "num_steps": 300},
    },
    "model.linear_mixer": ["gated_deltanet", "gla"],
    "ratio": {  # linear : attention
        "linear": {"model.ratio": 4},
        "3:1": {"model.ratio": 3},
        "1:1": {"model.ratio": 1},
        "attention": {"model.ratio": 0},
    },
}


def get_config(tiny: bool = False) -> TrainConfig:
    cfg = TrainConfig(
        name="recall_vs_ratio",
        model=LMConfig(
            vocab_size=258,  # byte tokenizer (MQAR uses the first 64 ids)
            d_model=64,  # residual width
            num_heads=2,  # heads per mixer
            pattern=None,  # layers from (num_layers, ratio)
            num_layers=4,
            ratio=3,  # linear layers per attention layer (GRID sweeps it)
            linear_mixer="gated_deltanet",  # gated_deltanet | gla (GRID sweeps it)
            placement="last",  # attention closes each group
            mlp_hidden=128,  # SwiGLU width
            mixers={
                "gated_deltanet": dict(_LINEAR, dt_max=1e-2),  # slow initial forgetting
                "gla": dict(_LINEAR, gate_bias_init=4.0),  # slow initial forgetting
                "attention": {"short_conv": 4},  # the same short conv as the linear layers
            },
        ),
        data=DataConfig(
            task="mqar",  # mqar | text (GRID's task axis)
            vocab_size=64,  # MQAR: keys 1..31, values 32..63
            train_slices=SLICES,
            eval_slices=SLICES,
            num_train_examples=20_000,  # per slice
            num_eval_examples=256,  # per slice (text: validation rows)
            text_file=find_corpus(__file__),  # task text: tiny Shakespeare
            seq_len=64,  # task text: bytes per row
        ),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=50, weight_decay=0.1),
        batch_size=64,  # MQAR: 600 steps × 64 = 38K sequences
        num_steps=600,
        log_every=100,
        tensorboard=False,
    )
    if tiny:
        cfg = dataclasses.replace(
            cfg,
            name="recall_vs_ratio_tiny",
            model=dataclasses.replace(cfg.model, num_layers=2, ratio=1, d_model=16, mlp_hidden=32),
            data=dataclasses.replace(
                cfg.data, num_train_examples=256, num_eval_examples=16, seq_len=32
            ),
            batch_size=8,
            num_steps=20,
            log_every=10,
        )
    return cfg
