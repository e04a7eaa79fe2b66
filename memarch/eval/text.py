"""Language-model evaluation on the held-out split: loss per token, perplexity, bits per byte.

Over the scored validation rows (:func:`memarch.data.text.eval_rows`; labelled targets only,
no target crossing a document boundary, the embedding's padding ids never predicted)::

    loss           = Σ −log p(target) / tokens          (nats per target token)
    perplexity     = exp(loss)
    bits_per_byte  = loss / ln 2 / bytes_per_target

``bytes_per_target`` is the split's UTF-8 text bytes over its target tokens
(:func:`memarch.data.text.bytes_per_target`), so bits per byte compares models with different
tokenizers; it is exact when every validation row is scored and the split's average otherwise.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx

from memarch.data.config import DataConfig
from memarch.data.pipeline import text_eval_batches
from memarch.data.text import bytes_per_target, eval_rows
from memarch.models.forward import forward
from memarch.train.step import masked_ce_sums


def evaluate_text(model: nnx.Module, cfg: DataConfig, *, batch_size: int = 16) -> dict[str, float]:
    """``{"loss", "perplexity", "bits_per_byte", "accuracy", "tokens"}`` over the validation
    rows (no ``bits_per_byte`` for a split without text bytes)."""
    graphdef, state = nnx.split(model)
    num_classes = cfg.vocab_size if model.vocab_size > cfg.vocab_size else None

    @jax.jit
    def step(state, batch):
        logits, _, _ = forward(nnx.merge(graphdef, state), batch)
        return masked_ce_sums(logits, batch["targets"], num_classes)

    ce = correct = n = 0.0
    for batch in text_eval_batches(cfg, batch_size):
        c, k, m = (float(np.asarray(x)) for x in step(state, batch))
        ce, correct, n = ce + c, correct + k, n + m
    if n == 0:
        raise ValueError("the validation rows hold no target token (data.seq_len too short?)")
    loss = ce / n
    per_target = bytes_per_target(cfg, eval_rows(cfg)[0])
    result = {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
    if per_target is not None:
        result["bits_per_byte"] = loss / math.log(2) / per_target
    return {**result, "accuracy": correct / n, "tokens": n}


def text_report(result: dict) -> str:
    """One line of :func:`evaluate_text`'s result."""
    bpb = result.get("bits_per_byte")
    return (
        f"loss {result['loss']:.4f} nats/token  perplexity {result['perplexity']:.2f}  "
        f"bits/byte {'n/a' if bpb is None else f'{bpb:.4f}'}  accuracy {result['accuracy']:.3f}  "
        f"({int(result['tokens'])} tokens scored)"
    )


__all__ = ["evaluate_text", "text_report"]
