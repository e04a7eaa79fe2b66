"""One small language model trained for the evaluation tests that need a trained run: a 2-layer
Gated DeltaNet LM (a recurrent model, byte tokenizer) trained on the synthetic extraction corpus
(:func:`memarch.data.extraction.write_extraction_corpus`, documents read once or twice), saved
as a ``memarch train`` run directory. It is trained once per test run: the first xdist worker
that needs it trains it into the run's shared folder (``MEMARCH_TEST_SHARED_DIR``, made by
tests/conftest.py) under a file lock, and the others wait for it and load it."""

import fcntl
import json
import os
from pathlib import Path

import jax
import pytest

from memarch.data.extraction import SYNTHETIC_KEYS, SYNTHETIC_VALUES, write_extraction_corpus
from memarch.train.config import apply_overrides, load_config
from memarch.train.trainer import train

LM_340M = str(Path(__file__).resolve().parents[2] / "configs" / "lm_340m_hybrid.py")
TRAIN_STEPS = 40
EXTRACTION_VOCAB = {
    "num_fields": 2,
    "keys": SYNTHETIC_KEYS[:4],
    "values_pool": SYNTHETIC_VALUES[:8],
}


@pytest.fixture(scope="session")
def trained_run():
    """``(run directory, logged metrics [{"step", "loss", …}], folder holding train.jsonl and
    eval.jsonl)``."""
    shared = Path(os.environ["MEMARCH_TEST_SHARED_DIR"])
    root = shared / "trained_lm"
    with open(shared / "trained_lm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (root / "done").exists():
            _train(root)
            (root / "done").write_text("trained\n")
    history = [
        json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    return root / "run", [h for h in history if "loss" in h], root


def _train(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "train.jsonl"
    write_extraction_corpus(
        corpus,
        num_records=1500,
        seed=1,
        kind="train",
        num_passes=(1, 2),
        ask_all=True,
        **EXTRACTION_VOCAB,
    )
    write_extraction_corpus(root / "eval.jsonl", num_records=48, seed=2, **EXTRACTION_VOCAB)
    cfg = apply_overrides(
        load_config(LM_340M, tiny=True),
        [
            "model.pattern='GG'",
            "model.d_model=64",
            "model.num_heads=2",
            "model.mlp_hidden=128",
            "model.mixers={'gated_deltanet': {'head_dim': 32, 'short_conv': 4}}",
            f"data.text_file='{corpus}'",
            f"data.data_dir='{root / 'cache'}'",
            "data.seq_len=128",
            "data.text_val_every=200",
            "batch_size=16",
            f"num_steps={TRAIN_STEPS}",
            "optim.learning_rate=1e-2",
            "optim.warmup_steps=20",
            "log_every=10",
        ],
    )
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)  # 40 steps: run time counts
    try:
        train(cfg, workdir=str(root / "run"), progress=False, log=lambda s: None)
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
