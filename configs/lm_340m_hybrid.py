"""A 340M-class hybrid LM for a TPU pod (fla's 340M shape; 393M parameters with the untied
32,000-row embedding and head): 24 layers, three Gated DeltaNet layers per softmax-attention
layer ("GGGA" × 6), d_model 1024, on a web corpus tokenized with the Llama-2
SentencePiece tokenizer (32,000 ids, as fla's 340M/1.3B models and the hybrid-ratio study).

Sharding: fully-sharded data parallel over every chip (mesh fsdp = -1): parameters, Adam
moments and the batch are split over the fsdp axis; switch on tensor parallelism with
``mesh.fsdp=-1 mesh.tensor=4`` (heads, MLP and vocab split). bfloat16 compute, float32
master weights.

Data: prepare the corpus once (docs/data.md; ArrayRecord shards of token ids, any machine with
many cores), then point every host at it (start-up reads only the index):
    memarch data prepare '/data/slimpajama/*.jsonl' --text-field text \\
        --tokenizer /data/llama2/tokenizer.model --out /data/slimpajama-llama2 --workers 64

Pod launch (every host runs the same command; TPU pods auto-detect the coordinator):
    memarch train --config configs/lm_340m_hybrid.py --workdir /shared/lm340m \\
        distributed.initialize=True data.text_dir=/data/slimpajama-llama2 \\
        data.tokenizer=/data/llama2/tokenizer.model
($MEMARCH_TEXT_DIR / $MEMARCH_TOKENIZER set the same two fields.) Resume after pre-emption: the
same command with --resume. Held-out loss, perplexity and bits per byte every eval_every steps.
CPU (tiny variant, d_model 32, 2 layers, byte tokenizer on a local text file, by default tiny
Shakespeare): memarch train --config configs/lm_340m_hybrid.py --tiny
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

_GDN = {"head_dim": 128, "expand_v": 1.0, "short_conv": 4}


def get_config(tiny: bool = False) -> TrainConfig:
    if tiny:
        return TrainConfig(
            name="lm_340m_hybrid_tiny",
            model=LMConfig(
                vocab_size=384,  # the byte tokenizer's 258 ids padded to a multiple of 128
                d_model=32,  # tiny width
                num_heads=2,  # heads per mixer
                pattern="GA",  # one Gated DeltaNet layer, one attention layer
                mlp_hidden=64,  # SwiGLU width
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
            optim=OptimConfig(learning_rate=3e-3, warmup_steps=10),
            mesh=MeshConfig(data=-1),  # plain data parallelism over the local devices
            batch_size=8,  # sequences per step
            num_steps=50,  # optimiser steps
            log_every=10,  # steps between logged metrics
        )
    return TrainConfig(
        name="lm_340m_hybrid",
        model=LMConfig(
            vocab_size=32000,  # the tokenizer's ids (a multiple of 128)
            d_model=1024,  # residual width
            num_heads=8,  # heads per mixer (head_dim 128)
            pattern="GGGA" * 6,  # 24 layers, 3 Gated DeltaNet : 1 attention
            mlp_hidden=2816,  # SwiGLU width (fla's 340M: int(8/3 · 1024) rounded up to 256)
            tie_embeddings=False,  # separate output head
            mixers={"gated_deltanet": dict(_GDN), "attention": {"qk_norm": True}},
        ),
        data=DataConfig(
            task="text",  # packed documents, BOS before each
            vocab_size=32000,  # the tokenizer's id count
            text_dir=os.environ.get("MEMARCH_TEXT_DIR", "/data/slimpajama-llama2"),  # prepared
            tokenizer=os.environ.get("MEMARCH_TOKENIZER", "/data/llama2/tokenizer.model"),
            seq_len=2048,  # tokens per row
            num_eval_examples=512,  # validation rows per evaluation
        ),
        optim=OptimConfig(
            learning_rate=1e-3,  # peak
            warmup_steps=2000,  # linear warmup
            end_lr_ratio=0.1,  # cosine to 10 % of peak
            weight_decay=0.1,  # matrices only
            b2=0.95,  # Adam β2
        ),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),  # FSDP over all chips
        checkpoint=CheckpointConfig(every=1000, keep=3),  # async orbax checkpoints
        batch_size=256,  # sequences per step: 0.5M tokens
        compute_dtype="bfloat16",  # bf16 compute, f32 master weights
        num_steps=50_000,  # ≈ 26B tokens
        eval_every=2000,  # held-out loss every n steps
        log_every=50,  # steps between logged metrics
        peak_tflops=275.0,  # TPU v4 bf16 peak per chip, for the MFU estimate
    )
