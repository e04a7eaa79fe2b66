"""Language-model evaluation on held-out text: mean next-token loss and accuracy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from memarch.data.config import DataConfig
from memarch.data.mqar import IGNORE_INDEX
from memarch.data.pipeline import text_eval_batches
from memarch.models.forward import forward


def evaluate_text(model: nnx.Module, cfg: DataConfig, *, batch_size: int = 16) -> dict[str, float]:
    """``{"loss", "accuracy", "tokens"}`` over the validation rows (labelled tokens only)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, batch):
        logits, _, _ = forward(nnx.merge(graphdef, state), batch)
        targets = batch["targets"]
        mask = targets != IGNORE_INDEX
        ce = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), jnp.where(mask, targets, 0)
        )
        correct = (jnp.argmax(logits, -1) == targets) & mask
        return jnp.where(mask, ce, 0.0).sum(), correct.sum(), mask.sum()

    ce = correct = n = 0.0
    for batch in text_eval_batches(cfg, batch_size):
        c, k, m = (float(np.asarray(x)) for x in step(state, batch))
        ce, correct, n = ce + c, correct + k, n + m
    return {"loss": ce / max(n, 1), "accuracy": correct / max(n, 1), "tokens": n}


__all__ = ["evaluate_text"]
