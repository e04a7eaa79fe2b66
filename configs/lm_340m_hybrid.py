"""A 340M-parameter hybrid LM for a TPU pod: 24 layers, three Gated DeltaNet layers per
softmax-attention layer ("GGGA" × 6), d_model 1024, byte-level text.

Sharding: fully-sharded data parallel over every chip (mesh fsdp = -1): parameters, Adam
moments and the batch are split over the fsdp axis; switch on tensor parallelism with
``mesh.fsdp=-1 mesh.tensor=4`` (heads, MLP and vocab split). bfloat16 compute, float32
master weights. The data is a local text file built into a TFDS ArrayRecord dataset (no
download); point ``data.text_file`` at a large corpus for real runs.

Pod launch (every host runs the same command; TPU pods auto-detect the coordinator):
    memarch train --config configs/lm_340m_hybrid.py --workdir gs://…/lm340m \\
        distributed.initialize=True data.text_file=/data/corpus.txt
Resume after pre-emption: the same command with --resume.
CPU (tiny variant, d_model 32, 2 layers): memarch train --config configs/lm_340m_hybrid.py --tiny
"""

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
                vocab_size=258,  # byte tokenizer
                d_model=32,  # tiny width
                num_heads=2,  # heads per mixer
                pattern="GA",  # one Gated DeltaNet layer, one attention layer
                mlp_hidden=64,  # SwiGLU width
                mixers={"gated_deltanet": {"head_dim": 16, "short_conv": 4}},
            ),
            data=DataConfig(
                task="text",  # packed byte-level text
                vocab_size=258,  # = model.vocab_size
                text_file=find_corpus(__file__),  # local text (tests: tinyshakespeare)
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
            vocab_size=258,  # byte tokenizer
            d_model=1024,  # residual width
            num_heads=8,  # heads per mixer (head_dim 128)
            pattern="GGGA" * 6,  # 24 layers, 3 Gated DeltaNet : 1 attention
            mlp_hidden=2944,  # SwiGLU width (a multiple of 128; 338M parameters in all)
            tie_embeddings=False,  # separate output head
            mixers={"gated_deltanet": dict(_GDN), "attention": {"qk_norm": True}},
        ),
        data=DataConfig(
            task="text",  # packed byte-level text
            vocab_size=258,  # = model.vocab_size
            text_file=find_corpus(__file__),  # replace with a large corpus
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
