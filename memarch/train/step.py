"""Loss, train state and the jit-compiled train step.

The train state is a plain dict pytree (cheap to flatten on every call)::

    {"params": {...float32 master weights...}, "opt_state": optax state,
     "step": int32[], "rng": uint32[2] (base PRNG key data)}

The model's graph definition is split off once; the compiled step merges it with the
parameters, differentiates, applies the optax update and returns the new state. Its input
state buffers are donated. The models here are deterministic; ``rng`` is carried (and
checkpointed) for stochastic layers, whose per-step key is ``fold_in(rng, step)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from memarch.data.mqar import IGNORE_INDEX
from memarch.models.forward import forward


def masked_cross_entropy(
    logits: jax.Array, targets: jax.Array, num_classes: int | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean CE over positions whose target is not ``IGNORE_INDEX``.

    ``logits [B, T, V]`` float, ``targets [B, T]`` int -> (loss, {"accuracy", "tokens"}).
    """
    ce_sum, correct, n = masked_ce_sums(logits, targets, num_classes)
    d = jnp.maximum(n, 1)
    return ce_sum / d, {"accuracy": correct / d, "tokens": n}


def masked_ce_sums(logits: jax.Array, targets: jax.Array, num_classes: int | None = None):
    """``(Σ CE, Σ correct, labelled count)`` over positions whose target is not ignored.

    ``num_classes = n < V``: only ids ``< n`` can be predicted (the softmax and the argmax
    leave out the embedding's padding rows ``n … V − 1``, e.g. a tokenizer's 50,257 ids in a
    50,304-row embedding)."""
    if num_classes is not None and num_classes < logits.shape[-1]:
        valid = jnp.arange(logits.shape[-1]) < num_classes
        logits = jnp.where(valid, logits, -jnp.inf)
    mask = targets != IGNORE_INDEX
    safe = jnp.where(mask, targets, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    correct = (jnp.argmax(logits, -1) == targets) & mask
    return jnp.where(mask, ce, 0.0).sum(), correct.sum(), mask.sum()


def params_of(model: nnx.Module) -> dict:
    """The model's ``nnx.Param`` values as a nested dict of arrays."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def init_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int) -> dict:
    """A fresh train state for ``model`` (run it under ``jax.jit`` to create it sharded)."""
    params = params_of(model)
    return {
        "params": params,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.key(seed)),
    }


def all_finite(tree: Any) -> jax.Array:
    """``bool[]``: no floating array of ``tree`` holds a NaN or an infinity."""
    flags = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.stack(flags).all() if flags else jnp.ones((), bool)


def _cast_floats(tree, dtype):
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def make_train_step(
    graphdef: Any,
    tx: optax.GradientTransformation,
    *,
    grad_accum_steps: int = 1,
    compute_dtype: str = "float32",
    skip_nonfinite: bool = False,
    state_shardings: Any = None,
    batch_shardings: Any = None,
    num_classes: int | None = None,
    param_compute_shardings: Any = None,
) -> Callable:
    """Returns the jitted ``step(state, batch) -> (state, metrics)`` (state donated).

    ``batch``: ``{"inputs", "targets"[, "segment_ids"]}: int32[B, T]``. With
    ``grad_accum_steps = k`` the batch is split into ``k`` micro-batches of rows
    ``i, i + k, …`` (so each stays on its devices) whose gradients are summed in a
    ``lax.scan``; the loss is normalised by the labelled tokens of the whole batch, so the
    result equals the single-batch step up to float rounding. ``compute_dtype="bfloat16"``
    casts a copy of the float32 master weights for the forward and backward pass.
    ``num_classes``: the loss predicts only ids below it (see :func:`masked_ce_sums`).
    ``param_compute_shardings``: the shardings the (cast) parameters are constrained to before
    the forward pass — gathered over the data-parallel axes
    (:func:`memarch.train.mesh.compute_shardings`); None leaves the choice to the partitioner.
    Every step checks its loss, its gradient norm and every floating array of the updated
    parameters and optimiser state for NaN/inf (one fused reduction per array):
    ``metrics["finite"]`` is true when the returned state passed. With ``skip_nonfinite``
    a step that fails leaves the parameters and optimiser state unchanged
    (``metrics["skipped"] = 1``, and ``finite`` stays true: the old state is returned).
    Metrics: loss, ce, aux_loss, accuracy, tokens, grad_norm, skipped, finite and any sown
    statistics.
    """
    dtype = jnp.dtype(compute_dtype)
    k = grad_accum_steps

    def loss_fn(params, batch, denom):
        if dtype != jnp.float32:
            params = _cast_floats(params, dtype)
        if param_compute_shardings is not None:
            params = jax.lax.with_sharding_constraint(params, param_compute_shardings)
        model = nnx.merge(graphdef, params)
        logits, aux, stats = forward(model, batch)
        ce_sum, correct, n = masked_ce_sums(logits, batch["targets"], num_classes)
        ce = ce_sum / denom
        aux = aux.astype(jnp.float32) / k
        stats = {name: v.astype(jnp.float32) / k for name, v in stats.items()}
        return ce + aux, dict(stats, ce=ce, aux_loss=aux, correct=correct, tokens=n)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def grads_and_metrics(params, batch):
        denom = jnp.maximum((batch["targets"] != IGNORE_INDEX).sum(), 1).astype(jnp.float32)
        if k == 1:
            (loss, m), grads = grad_fn(params, batch, denom)
            return loss, m, grads

        def split(x):  # [B, ...] -> [k, B/k, ...], micro-batch i = rows i, i + k, ...
            return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)

        micro = jax.tree.map(split, batch)
        zeros = jax.tree.map(jnp.zeros_like, params)
        first = jax.tree.map(lambda x: x[0], micro)
        m_shape = jax.eval_shape(lambda: grad_fn(params, first, denom)[0][1])
        m_zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape)

        def body(carry, mb):
            loss_acc, m_acc, g_acc = carry
            (loss, m), g = grad_fn(params, mb, denom)
            return (
                loss_acc + loss,
                jax.tree.map(jnp.add, m_acc, m),
                jax.tree.map(jnp.add, g_acc, g),
            ), None

        (loss, m, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), m_zero, zeros), micro)
        return loss, m, grads

    def train_step(state, batch):
        params, opt_state = state["params"], state["opt_state"]
        loss, m, grads = grads_and_metrics(params, batch)
        grad_norm = optax.tree.norm(grads)
        updates, new_opt = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        ok = (
            jnp.isfinite(loss)
            & jnp.isfinite(grad_norm)
            & all_finite(new_params)
            & all_finite(new_opt)
        )
        if skip_nonfinite:
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
            new_params, new_opt = keep(new_params, params), keep(new_opt, opt_state)
        tokens = m.pop("tokens")
        correct = m.pop("correct")
        metrics = dict(
            m,
            loss=loss,
            accuracy=correct / jnp.maximum(tokens, 1),
            tokens=tokens,
            grad_norm=grad_norm,
            skipped=(~ok).astype(jnp.int32) if skip_nonfinite else jnp.zeros((), jnp.int32),
            finite=jnp.ones((), bool) if skip_nonfinite else ok,
        )
        new_state = {
            "params": new_params,
            "opt_state": new_opt,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        return new_state, metrics

    kwargs = {}
    if state_shardings is not None:
        kwargs["in_shardings"] = (state_shardings, batch_shardings)
        kwargs["out_shardings"] = (state_shardings, None)
    return jax.jit(train_step, donate_argnums=0, **kwargs)


__all__ = [
    "all_finite",
    "init_state",
    "make_train_step",
    "masked_ce_sums",
    "masked_cross_entropy",
    "params_of",
]
