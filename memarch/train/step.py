"""Loss, and the jit-compiled train and eval steps.

Steps follow the split/merge pattern: the (model, optimiser) pair is split once into a
static graph definition and a state pytree; each compiled step merges, differentiates,
updates and returns the new state (no per-call graph traversal, buffers donated).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from memarch.data.mqar import IGNORE_INDEX
from memarch.models.forward import forward


def masked_cross_entropy(
    logits: jax.Array, targets: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean CE over positions whose target is not ``IGNORE_INDEX``.

    ``logits [B, T, V]`` float, ``targets [B, T]`` int -> (loss, {"accuracy", "tokens"}).
    """
    mask = targets != IGNORE_INDEX
    safe = jnp.where(mask, targets, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    n = jnp.maximum(mask.sum(), 1)
    loss = jnp.where(mask, ce, 0.0).sum() / n
    correct = (jnp.argmax(logits, -1) == targets) & mask
    return loss, {"accuracy": correct.sum() / n, "tokens": mask.sum()}


def _forward_loss(model, batch: dict[str, jax.Array]):
    logits, aux, stats = forward(model, batch)
    ce, metrics = masked_cross_entropy(logits, batch["targets"])
    return ce + aux, dict(metrics, ce=ce, aux_loss=aux, **stats)


def make_train_step(graphdef: Any):
    """Returns ``step(state, batch) -> (state, metrics)``; ``state = nnx.state((model, opt))``."""

    def train_step(state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        (loss, metrics), grads = nnx.value_and_grad(_forward_loss, has_aux=True)(model, batch)
        optimizer.update(model, grads)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        return nnx.state((model, optimizer)), metrics

    return jax.jit(train_step, donate_argnums=0)
