"""Hybrid-ratio ablation at pod scale: 340M-class, 24-layer Gated DeltaNet / GLA hybrids with
r linear layers per softmax-attention layer, the set-up of the hybrid-ratio study (arXiv
2507.06457: 340M models, 20B tokens, context 2048; ratios 24:1 … 3:1, pure linear and a
Transformer) on a web corpus tokenized with the Llama-2 SentencePiece tokenizer (32,000 ids, as
fla's 340M/1.3B models), with MQAR recall probes from a separate run per cell.

The ratio is expressed as in configs/recall_vs_ratio.py (``model.pattern=None``,
``num_layers=24``, ``ratio=r``, attention last in each group): r = 23 -> one attention layer,
7 -> 3, 5 -> 4, 3 -> 6, 1 -> 12, 0 -> all attention, 24 -> pure linear. Model shape as
configs/lm_340m_hybrid.py (d_model 1024, 8 heads of 128, SwiGLU 2816, untied head; ≈ 400M
parameters), bfloat16 compute, FSDP over every chip.

Every host of the pod runs the same command (TPU pods auto-detect the coordinator); one cell at
a time uses the whole pod (``--workers 1``); a pre-empted grid resumes where it stopped:

    memarch ablate --config configs/recall_vs_ratio_pod.py \\
        --grid-file configs/recall_vs_ratio_pod.py --pivot task --workers 1 \\
        --out /shared/recall_vs_ratio distributed.initialize=True \\
        data.text_dir=/data/slimpajama-llama2 data.tokenizer=/data/llama2/tokenizer.model

The corpus is prepared once beforehand (docs/data.md), on any machine with many cores:

    memarch data prepare '/data/slimpajama/*.jsonl' --text-field text \\
        --tokenizer /data/llama2/tokenizer.model --out /data/slimpajama-llama2 --workers 64

``--out`` must be a directory every host sees (a shared or mounted file system): every host
resolves the same cells in the same order at start-up and trains them in lock-step; each writes
the same result files (atomic renames). The embedding has the tokenizer's 32,000 rows; MQAR uses
the first 8192 (Zoology's V = 8192 > L), so one model shape serves both tasks.
CPU smoke run of the same grid: ``--tiny`` (2 layers, d_model 32, 20 steps, 32-token rows, the
byte tokenizer on a local text file: ``data.text_file``, by default tiny Shakespeare).
"""

import dataclasses
import os

from memarch.data.corpus import find_corpus
from memarch.models import LMConfig
from memarch.train.config import (
    CheckpointConfig,
    DataConfig,
    MeshConfig,
    OptimConfig,
    TrainConfig,
)

_LINEAR = {"head_dim": 128, "expand_v": 1.0, "short_conv": 4}
_MQAR = ((512, 64), (1024, 128), (2048, 256))  # (L, pairs): Zoology's long slices

GRID = {
    "seed": [0, 1, 2],
    "task": {
        "text": {"data.task": "text"},  # data.vocab_size: the tokenizer's (the base config's)
        # MQAR probes: the same model trained from scratch on MQAR (V = 8192 > L, as Zoology)
        "mqar": {"data.task": "mqar", "data.vocab_size": 8192},
    },
    "model.linear_mixer": ["gated_deltanet", "gla"],
    "ratio": {
        "linear": {"model.ratio": 24},
        "23:1": {"model.ratio": 23},
        "7:1": {"model.ratio": 7},
        "3:1": {"model.ratio": 3},
        "1:1": {"model.ratio": 1},
        "attention": {"model.ratio": 0},
    },
}


def get_config(tiny: bool = False) -> TrainConfig:
    cfg = TrainConfig(
        name="recall_vs_ratio_pod",
        model=LMConfig(
            vocab_size=32000,  # the tokenizer's ids (a multiple of 128); MQAR uses the first 8192
            d_model=1024,  # residual width
            num_heads=8,  # heads per mixer (head_dim 128)
            pattern=None,  # layers from (num_layers, ratio)
            num_layers=24,
            ratio=3,  # linear layers per attention layer (GRID sweeps it)
            linear_mixer="gated_deltanet",  # gated_deltanet | gla (GRID sweeps it)
            placement="last",
            mlp_hidden=2816,  # SwiGLU width (fla's 340M shape; ≈ 400M parameters with the head)
            tie_embeddings=False,  # separate output head
            mixers={
                "gated_deltanet": dict(_LINEAR),
                "gla": dict(_LINEAR),
                "attention": {"qk_norm": True},
            },
        ),
        data=DataConfig(
            task="text",  # text | mqar (GRID's task axis)
            vocab_size=32000,  # the tokenizer's id count (MQAR cells: 8192)
            text_dir=os.environ.get("MEMARCH_TEXT_DIR", "/data/slimpajama-llama2"),  # prepared
            tokenizer=os.environ.get("MEMARCH_TOKENIZER", "/data/llama2/tokenizer.model"),
            seq_len=2048,  # tokens per row
            train_slices=_MQAR,
            eval_slices=_MQAR,
            num_train_examples=1_000_000,  # MQAR: per slice
            num_eval_examples=1024,  # ≥ 1,000 test sequences per slice (text: rows)
        ),
        optim=OptimConfig(
            learning_rate=1e-3, warmup_steps=2000, end_lr_ratio=0.1, weight_decay=0.1, b2=0.95
        ),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),  # FSDP over all chips
        checkpoint=CheckpointConfig(every=1000, keep=2),  # a pre-empted cell resumes here
        batch_size=256,  # sequences per step: 0.5M tokens
        compute_dtype="bfloat16",
        num_steps=40_000,  # ≈ 20B tokens, as in the study
        eval_every=5000,
        log_every=100,
        peak_tflops=275.0,  # TPU v4 bf16 peak per chip, for the MFU estimate
        tensorboard=False,
    )
    if tiny:
        cfg = dataclasses.replace(
            cfg,
            name="recall_vs_ratio_pod_tiny",
            model=dataclasses.replace(
                cfg.model,
                vocab_size=8192,  # MQAR's V; text uses the byte tokenizer's first 258 ids
                d_model=32,
                num_heads=2,
                num_layers=2,
                ratio=1,
                mlp_hidden=64,
                mixers={
                    "gated_deltanet": {"head_dim": 16},
                    "gla": {"head_dim": 16},
                    "attention": {"qk_norm": True},
                },
            ),
            data=dataclasses.replace(
                cfg.data,
                vocab_size=258,  # the byte tokenizer (MQAR cells: 8192, in the 8192-row embedding)
                text_dir="",
                text_file=find_corpus(__file__),  # a local text file, prepared on first use
                tokenizer="byte",
                seq_len=32,
                train_slices=((32, 4),),
                eval_slices=((32, 4),),
                num_train_examples=256,
                num_eval_examples=16,
            ),
            mesh=MeshConfig(data=-1),
            checkpoint=CheckpointConfig(),
            batch_size=8,
            compute_dtype="float32",
            num_steps=20,
            eval_every=0,
            log_every=10,
            peak_tflops=0.0,
        )
    return cfg
