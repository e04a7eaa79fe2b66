"""A 1.3B-class hybrid LM for a TPU pod: the larger size of the hybrid-ratio study (arXiv
2507.06457: 1.3B models, 100B tokens, context 2048), at its best recall ratio, 3 Gated DeltaNet
layers per softmax-attention layer ("GGGA" × 6, 24 layers), d_model 2048 with 16 heads of 128
(fla's 1.3B width), on a web corpus tokenized with the Llama-2 SentencePiece tokenizer
(32,000 ids, untied head): ≈ 1.4B parameters.

Sharding: fully-sharded data parallel over every chip (mesh fsdp = -1). Check that a topology
fits before asking for it (per-chip memory against HBM, FLOPs, MFU bound; no TPU needed):
    memarch compile --config configs/lm_1p3b_hybrid.py --topology v5e:16x16
Tensor parallelism: ``mesh.fsdp=-1 mesh.tensor=4``. Data preparation and the pod launch are
as in configs/lm_340m_hybrid.py (``data.text_dir``, ``data.tokenizer``,
``distributed.initialize=True``).
CPU (tiny variant, d_model 32, 2 layers, byte tokenizer on a local text file):
    memarch train --config configs/lm_1p3b_hybrid.py --tiny
"""

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

_GDN = {"head_dim": 128, "expand_v": 1.0, "short_conv": 4}  # as the 340M configs


def get_config(tiny: bool = False) -> TrainConfig:
    if tiny:
        return TrainConfig(
            name="lm_1p3b_hybrid_tiny",
            model=LMConfig(
                vocab_size=384,  # the byte tokenizer's 258 ids padded to a multiple of 128
                d_model=32,  # tiny width
                num_heads=2,  # heads per mixer
                pattern="GA",  # one Gated DeltaNet layer, one attention layer
                mlp_hidden=64,  # SwiGLU width
                tie_embeddings=False,  # separate output head, as the full model
                mixers={"gated_deltanet": {"head_dim": 16, "short_conv": 4}},
            ),
            data=DataConfig(
                task="text",  # packed documents, BOS before each
                vocab_size=258,  # the byte tokenizer's ids (the padding rows are never predicted)
                tokenizer="byte",
                text_file=find_corpus(__file__),  # local text, prepared on first use
                seq_len=32,  # tokens per row
                num_eval_examples=16,  # validation rows
            ),
            optim=OptimConfig(learning_rate=3e-3, warmup_steps=10),  # short CPU run
            mesh=MeshConfig(data=-1),  # plain data parallelism over the local devices
            batch_size=8,  # sequences per step
            num_steps=50,  # optimiser steps
            log_every=10,  # steps between logged metrics
        )
    return TrainConfig(
        name="lm_1p3b_hybrid",
        model=LMConfig(
            vocab_size=32000,  # the tokenizer's ids (a multiple of 128)
            d_model=2048,  # residual width (fla's 1.3B)
            num_heads=16,  # heads per mixer (head_dim 128)
            pattern="GGGA" * 6,  # 24 layers, 3 Gated DeltaNet : 1 attention (the study's 3:1)
            mlp_hidden=5632,  # SwiGLU width: int(8/3 · 2048) rounded up to a multiple of 256
            tie_embeddings=False,  # separate output head
            mixers={"gated_deltanet": dict(_GDN), "attention": {"qk_norm": True}},
            # recompute each block's activations in the backward pass: without it the train
            # step needs 19.05 GiB per v5e chip on v5e:16x16 (`memarch compile`), over 16 GiB
            remat="full",
        ),
        data=DataConfig(
            task="text",  # packed documents, BOS before each
            vocab_size=32000,  # the tokenizer's id count
            text_dir=os.environ.get("MEMARCH_TEXT_DIR", "/data/slimpajama-llama2"),  # prepared
            tokenizer=os.environ.get("MEMARCH_TOKENIZER", "/data/llama2/tokenizer.model"),
            seq_len=2048,  # tokens per row (the study's context)
            num_eval_examples=512,  # validation rows per evaluation
        ),
        optim=OptimConfig(
            learning_rate=4e-4,  # peak: lower than the 340M runs' 1e-3 at 4× the width
            warmup_steps=2000,  # linear warmup
            end_lr_ratio=0.1,  # cosine to 10 % of peak
            weight_decay=0.1,  # matrices only
            b2=0.95,  # Adam β2
        ),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),  # FSDP over all chips
        checkpoint=CheckpointConfig(every=1000, keep=3),  # async orbax checkpoints
        batch_size=512,  # sequences per step: 1M tokens
        compute_dtype="bfloat16",  # bf16 compute, f32 master weights
        num_steps=95_000,  # ≈ 100B tokens, as the study's 1.3B runs
        eval_every=5000,  # held-out loss every n steps
        log_every=50,  # steps between logged metrics
        peak_tflops=197.0,  # TPU v5e bf16 peak per chip, for the MFU estimate
    )
