"""Run a Pallas kernel entry per shard under a sharded ``jit``.

A ``pallas_call`` is opaque to the SPMD partitioner, so under a mesh its inputs would be
gathered onto every device (or the Mosaic lowering rejects them). :func:`shard_batch_heads`
wraps the kernel entry in ``jax.shard_map`` over the kernel's mesh (:func:`kernel_mesh`): the
mesh that ``jax.set_mesh`` made current, else the mesh the inputs were placed on (under
``jit``, an argument given with a ``NamedSharding`` carries its mesh in its type — the same
sources that name the device the kernel is compiled for, see :mod:`memarch.kernels._target`):
the batch axis (dim 0) is split over the data-like mesh axes present (``data``, ``fsdp``; see
:mod:`memarch.train.mesh`) and the head axis (dim 1) over ``tensor`` when present. Recurrences
are independent across batch rows and heads, so each shard runs the kernel on its own rows and
no collective is needed. A mesh axis that does not divide its dimension is left out
(replicated), as :mod:`memarch.train.mesh` does for parameters. With no mesh the entry is called
directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
HEAD_AXES = ("tensor",)


def _dividing_axes(mesh, names: Sequence[str], size: int) -> tuple[str, ...]:
    """The axes of ``names`` present in ``mesh`` (in order) whose running product divides
    ``size``; an axis that would break divisibility is skipped."""
    chosen, prod = [], 1
    for name in names:
        if name in mesh.axis_names and size % (prod * mesh.shape[name]) == 0:
            chosen.append(name)
            prod *= mesh.shape[name]
    return tuple(chosen)


def batch_head_spec(mesh, batch: int, heads: int) -> tuple[Any, Any]:
    """(batch, head) entries of a PartitionSpec for ``[B, H, ...]`` arrays on ``mesh``."""
    b_axes = _dividing_axes(mesh, BATCH_AXES, batch)
    h_axes = _dividing_axes(mesh, HEAD_AXES, heads)
    as_entry = lambda axes: None if not axes else axes[0] if len(axes) == 1 else axes
    return as_entry(b_axes), as_entry(h_axes)


def kernel_mesh(*args) -> AbstractMesh:
    """The mesh a kernel with inputs ``args`` runs under: the current abstract mesh
    (``jax.set_mesh`` / ``use_abstract_mesh``), else the first non-empty mesh in the inputs'
    types, else the empty mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        return mesh
    for x in args:
        try:
            placed = getattr(jax.typeof(x).sharding, "mesh", None)
        except (TypeError, AttributeError):
            continue
        if placed is not None and not placed.empty:
            return placed.abstract_mesh
    return mesh


def shard_batch_heads(
    fn: Callable[..., Any], *args: jax.Array, mesh: AbstractMesh | None = None
) -> Any:
    """``fn(*args)``, run per (batch, head) shard when the kernel has a mesh
    (``mesh``, by default :func:`kernel_mesh` of ``args``).

    Every input and output of ``fn`` must be an array whose first two dims are batch and heads
    (``[B, H, ...]``); ``fn`` must not mix rows or heads. Returns ``fn``'s outputs (a pytree of
    such arrays), laid out as global arrays again.
    """
    mesh = kernel_mesh(*args) if mesh is None else mesh
    if mesh.empty:
        return fn(*args)
    batch, heads = args[0].shape[:2]
    for x in args:
        if x.shape[:2] != (batch, heads):
            raise ValueError(
                f"shard_batch_heads needs [B, H, ...] arrays with B, H = {batch}, {heads}; "
                f"got an input of shape {x.shape}"
            )
    b_entry, h_entry = batch_head_spec(mesh, batch, heads)
    if b_entry is None and h_entry is None:
        return fn(*args)
    spec = P(b_entry, h_entry)
    return jax.shard_map(
        fn, mesh=mesh, in_specs=(spec,) * len(args), out_specs=spec, check_vma=False
    )(*args)
