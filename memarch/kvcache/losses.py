"""TRIM-KV training: capacity loss, distillation loss, and gate-only training.

With per-key retention ``β_i = exp(log β_i)`` of one (layer, KV head), the soft number of
keys still held at step t is ``S_t = Σ_{i ≤ t} β_i^{t−i}`` (keys of the same segment). The
capacity loss (paper form, arXiv 2512.03324) penalises exceeding a budget M::

    L_cap = (1/T) Σ_t (1/t) · max(0, S_t − M)          t = 1-based position in the segment

averaged over batch rows and heads. ``S_t`` is not a scalar linear recurrence (each key decays
at its own rate), so it is computed blockwise over keys: O(T²) FLOPs, O(T · block) memory.

The distillation loss compares the student (gates on) with the same model with its gates off
(the teacher, under ``stop_gradient``): forward ``KL(p_teacher ‖ q_student)`` plus next-token
cross-entropy. Only the gates train: :data:`TRIMKV_GATE_PARAMS` selects them for ``nnx.Optimizer``
and ``nnx.value_and_grad``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from memarch.layers.rope import segment_positions

TRIMKV_GATE_NAME = "retention_gate"  # attribute name of the gate module in a mixer
TRIMKV_GATE_PARAMS = nnx.All(
    nnx.Param, nnx.PathContains(TRIMKV_GATE_NAME)
)  # the trainable TRIM-KV gates


def retention_mass(
    log_beta: jax.Array, segment_ids: jax.Array | None = None, *, block_size: int = 64
) -> jax.Array:
    """``S_t = Σ_{i ≤ t, same segment} exp((t − i)·log β_i)``, ``[B, T, H] -> [B, T, H]``
    (float32, or float64 for float64 input).

    Computed with a ``lax.scan`` over key blocks (never the ``T × T`` matrix).
    """
    if log_beta.ndim != 3:
        raise ValueError(f"log_beta must have shape [B, T, H]; got {log_beta.shape}")
    b, t, h = log_beta.shape
    if segment_ids is not None and segment_ids.shape != (b, t):
        raise ValueError(f"segment_ids must have shape {(b, t)} ([B, T]); got {segment_ids.shape}")
    n = -(-t // block_size)
    pad = n * block_size - t
    dtype = jnp.promote_types(log_beta.dtype, jnp.float32)  # float32, or float64 under x64
    a = jnp.pad(log_beta.astype(dtype), [(0, 0), (0, pad), (0, 0)])
    seg = jnp.zeros((b, t), jnp.int32) if segment_ids is None else segment_ids
    seg_k = jnp.pad(seg, [(0, 0), (0, pad)], constant_values=-1)
    kpos = jnp.arange(n * block_size)
    qpos = jnp.arange(t)
    xs = (
        jnp.moveaxis(a.reshape(b, n, block_size, h), 1, 0),
        jnp.moveaxis(seg_k.reshape(b, n, block_size), 1, 0),
        kpos.reshape(n, block_size),
    )

    @jax.checkpoint
    def body(acc, blk):
        a_k, seg_blk, kp = blk
        dt = (qpos[:, None] - kp[None, :]).astype(dtype)  # [T, block]
        ok = (dt >= 0)[None] & (seg[:, :, None] == seg_blk[:, None, :])  # [B, T, block]
        expo = jnp.where(ok[..., None], dt[None, :, :, None] * a_k[:, None], -jnp.inf)
        return acc + jnp.sum(jnp.exp(expo), axis=2), None

    acc, _ = jax.lax.scan(body, jnp.zeros((b, t, h), dtype), xs)
    return acc


def capacity_loss(
    log_beta: jax.Array,
    budget: float,
    segment_ids: jax.Array | None = None,
    *,
    block_size: int = 64,
) -> jax.Array:
    """``(1/T) Σ_t (1/t)·max(0, S_t − M)`` averaged over batch and heads (module docstring).

    ``log_beta [B, T, H_kv]`` (≤ 0), ``budget`` M > 0. Zero exactly when every ``S_t ≤ M``.
    """
    if not budget > 0:
        raise ValueError(f"budget must be > 0; got {budget!r}")
    s = retention_mass(log_beta, segment_ids, block_size=block_size)
    b, t, _ = log_beta.shape
    pos = (
        jnp.broadcast_to(jnp.arange(t), (b, t))
        if segment_ids is None
        else segment_positions(segment_ids)
    )
    hinge = jnp.where(s > budget, s - budget, 0.0) / (pos + 1.0)[..., None]  # 0 grad at S = M
    return jnp.mean(hinge)


def distillation_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    targets: jax.Array,
    mask: jax.Array | None = None,
    *,
    kl_weight: float = 1.0,
    ntp_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``kl_weight · KL(p_teacher ‖ q_student) + ntp_weight · CE(targets, q_student)``.

    ``student_logits, teacher_logits [B, T, V]``, int ``targets [B, T]``, bool ``mask [B, T]``
    (positions that count; all by default). The teacher is under ``stop_gradient``. Returns
    (loss, {"kl", "ntp"}) with each term a masked mean over positions.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher_logits must have the student's shape {student_logits.shape}; "
            f"got {teacher_logits.shape}"
        )
    if targets.shape != student_logits.shape[:2]:
        raise ValueError(f"targets must have shape {student_logits.shape[:2]}; got {targets.shape}")
    mask = jnp.ones(targets.shape, bool) if mask is None else mask
    logq = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
    logp = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)
    safe = jnp.where(mask, targets, 0)
    ntp = optax.softmax_cross_entropy_with_integer_labels(logq, safe)
    n = jnp.maximum(jnp.sum(mask), 1)
    kl, ntp = jnp.sum(jnp.where(mask, kl, 0.0)) / n, jnp.sum(jnp.where(mask, ntp, 0.0)) / n
    return kl_weight * kl + ntp_weight * ntp, {"kl": kl, "ntp": ntp}


@contextlib.contextmanager
def trimkv_gates_enabled(model: nnx.Module, enabled: bool) -> Iterator[nnx.Module]:
    """Within the block, every TRIM-KV mixer of ``model`` applies (``enabled``) or ignores its
    retention bias — ``enabled=False`` turns the model into its own teacher."""
    mods = [m for _, m in nnx.iter_graph(model) if hasattr(m, "use_retention_gates")]
    old = [m.use_retention_gates for m in mods]
    for m in mods:
        m.use_retention_gates = enabled
    try:
        yield model
    finally:
        for m, o in zip(mods, old, strict=True):
            m.use_retention_gates = o
