"""TRIM-KV gate training, the gate-only step: its objective is distillation to the gates-off
model, next-token loss and the capacity losses the TRIM-KV mixers sow (see
:mod:`memarch.kvcache.losses`)."""

from __future__ import annotations

import jax
from flax import nnx

from memarch.data.mqar import IGNORE_INDEX
from memarch.kvcache.losses import TRIMKV_GATE_PARAMS, distillation_loss, trimkv_gates_enabled
from memarch.models.forward import forward


def trimkv_objective(
    model: nnx.Module,
    batch: dict[str, jax.Array],
    *,
    kl_weight: float = 1.0,
    ntp_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Distillation + next-token + the capacity losses the mixers sow (``aux_loss``).

    ``batch``: ``inputs``, ``targets`` ([B, T]; ``IGNORE_INDEX`` targets are ignored), optional
    ``segment_ids``. Differentiate with ``nnx.value_and_grad(..., argnums=nnx.DiffState(0,
    TRIMKV_GATE_PARAMS))`` so that only the gates train.
    """
    with trimkv_gates_enabled(model, False):
        teacher = model(batch["inputs"], segment_ids=batch.get("segment_ids"))[0]
    student, aux, stats = forward(model, batch)
    targets = batch["targets"]
    loss, parts = distillation_loss(
        student,
        teacher,
        targets,
        targets != IGNORE_INDEX,
        kl_weight=kl_weight,
        ntp_weight=ntp_weight,
    )
    return loss + aux, dict(parts, capacity=aux, **stats)


def trimkv_gate_optimizer(model: nnx.Module, tx) -> nnx.Optimizer:
    """An optimiser over the retention gates only (every other parameter stays frozen)."""
    return nnx.Optimizer(model, tx, wrt=TRIMKV_GATE_PARAMS)


@nnx.jit
def trimkv_gate_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict[str, jax.Array]):
    """One TRIM-KV step: gradients of :func:`trimkv_objective` w.r.t. the gates only, applied
    by ``optimizer`` (from :func:`trimkv_gate_optimizer`). Returns (loss, metrics)."""
    grad_fn = nnx.value_and_grad(
        lambda m, b: trimkv_objective(m, b),
        argnums=nnx.DiffState(0, TRIMKV_GATE_PARAMS),
        has_aux=True,
    )
    (loss, metrics), grads = grad_fn(model, batch)
    optimizer.update(model, grads)
    return loss, metrics
