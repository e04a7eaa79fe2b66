"""Device mesh and logical-axis sharding of parameters, optimiser state and batches.

The mesh has three named axes, ``data``, ``fsdp`` and ``tensor`` (sizes from
:class:`~memarch.train.config.MeshConfig`, ``-1`` = the devices left over). Axis types are
``Auto`` (GSPMD): the mixers contract sharded dimensions without per-op annotations and XLA
inserts the collectives.

Parameters get *logical* axis names from ``MeshConfig.param_axes`` — ``(path glob, names)``
pairs matched against the parameter's path (``"blocks/3/mixer/q_proj/kernel"``), first match
of the right rank wins — so no mixer needs sharding annotations of its own. The logical names
are mapped to mesh axes by ``MeshConfig.rules``. A dimension whose size the mesh axes do not
divide is replicated instead (tiny test models). The same rules shard the optimiser state:
Adam's moments live at paths that end in the parameter's path. The batch's leading axis is
split over the ``batch`` rule (``data × fsdp`` by default). Inside the train step the weights
are gathered over the batch axes before use (:func:`compute_shardings`), so activations are
split over the batch only.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from memarch.train.config import MESH_AXES, MeshConfig


def mesh_shape(cfg: MeshConfig, num_devices: int) -> dict[str, int]:
    """Resolves ``-1`` sizes: ``{"data": d, "fsdp": f, "tensor": t}`` with ``d·f·t == num_devices``.

    Raises ``ValueError`` naming the field when a size is invalid or the sizes do not
    multiply to the device count.
    """
    sizes = {name: getattr(cfg, name) for name in MESH_AXES}
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or (size < 1 and size != -1):
            raise ValueError(f"mesh.{name} must be a positive int or -1 (the rest); got {size!r}")
    rest = [n for n, s in sizes.items() if s == -1]
    if len(rest) > 1:
        raise ValueError(f"at most one of mesh.data/fsdp/tensor may be -1; got -1 for {rest}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if num_devices % fixed:
        raise ValueError(
            f"mesh sizes {sizes} need a multiple of {fixed} devices; there are {num_devices} "
            "(mesh.data × mesh.fsdp × mesh.tensor must divide the device count)"
        )
    if rest:
        sizes[rest[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"mesh.data × mesh.fsdp × mesh.tensor = {fixed} must equal the device count "
            f"{num_devices} (or set one of them to -1)"
        )
    return sizes


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The ``(data, fsdp, tensor)`` mesh over ``devices`` (default: every global device)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(cfg, len(devices))
    return jax.make_mesh(
        tuple(shape[a] for a in MESH_AXES),
        MESH_AXES,
        axis_types=(AxisType.Auto,) * len(MESH_AXES),
        devices=devices,
    )


def _rules(cfg: MeshConfig) -> dict[str, tuple[str, ...]]:
    """``MeshConfig.rules`` as ``{logical: (mesh axes...)}``; checks the mesh axis names."""
    out = {}
    for logical, axes in cfg.rules:
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        for a in axes:
            if a not in MESH_AXES:
                raise ValueError(
                    f"mesh.rules maps {logical!r} to unknown mesh axis {a!r}; "
                    f"accepted: {list(MESH_AXES)} or None"
                )
        out[logical] = axes
    return out


def check_rules(cfg: MeshConfig) -> None:
    """Every logical name in ``param_axes`` (and ``batch``) must have a rule."""
    rules = _rules(cfg)
    if "batch" not in rules:
        raise ValueError("mesh.rules must map the logical axis 'batch' (e.g. to ('data', 'fsdp'))")
    for pattern, names in cfg.param_axes:
        for n in names:
            if n is not None and n not in rules:
                raise ValueError(
                    f"mesh.param_axes {pattern!r} uses logical axis {n!r}, which mesh.rules "
                    f"does not map; mapped: {sorted(rules)}"
                )


def logical_axes(cfg: MeshConfig, path: str, ndim: int) -> tuple[str | None, ...]:
    """Logical name of each dimension of the parameter at ``path`` (all None = replicated)."""
    for pattern, names in cfg.param_axes:
        if len(names) == ndim and (
            fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, "*/" + pattern)
        ):
            return tuple(names)
    return (None,) * ndim


def partition_spec(cfg: MeshConfig, sizes: Mapping[str, int], path: str, shape: Sequence[int]) -> P:
    """The mesh PartitionSpec of one array; non-dividing or repeated mesh axes are dropped."""
    rules = _rules(cfg)
    used: set[str] = set()
    spec = []
    for dim, name in zip(shape, logical_axes(cfg, path, len(shape)), strict=True):
        axes = tuple(a for a in rules.get(name, ()) if a not in used and sizes[a] > 1)
        if not axes or dim % math.prod(sizes[a] for a in axes):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return P(*spec)


def path_str(path) -> str:
    """``"blocks/3/mixer/q_proj/kernel"`` from a ``jax.tree_util`` key path."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def tree_shardings(cfg: MeshConfig, mesh: Mesh, tree: Any) -> Any:
    """A ``NamedSharding`` for every array leaf of ``tree`` (arrays or ShapeDtypeStructs)."""
    sizes = dict(mesh.shape)

    def one(path, leaf):
        return NamedSharding(mesh, partition_spec(cfg, sizes, path_str(path), leaf.shape))

    return jax.tree_util.tree_map_with_path(one, tree)


def compute_shardings(cfg: MeshConfig, shardings: Any) -> Any:
    """The shardings parameters are *used* with inside the step: each ``NamedSharding`` of
    ``shardings`` without the ``batch`` rule's mesh axes (``data``, ``fsdp``), i.e. gathered
    over the data-parallel axes and still split over ``tensor``.

    Fully-sharded data parallelism stores a weight split over ``fsdp`` but must not compute
    with it split so: the batch is split over the same axis, and in a matmul's backward pass
    (``dx = dy · Wᵀ``) the partitioner may then keep ``W``'s ``fsdp`` split on ``dx``'s model
    dimension, which it cannot reconcile with the batch-split residual stream except by
    replicating the whole activation ("involuntary full rematerialization"). Constraining the
    (cast) weights to these shardings makes the gather explicit — an all-gather per weight in
    the forward pass, its transpose a reduce-scatter of the gradient — and every activation
    stays split over the batch only.
    """
    batch_axes = set(_rules(cfg)["batch"])

    def drop(spec_entry):
        if spec_entry is None:
            return None
        axes = spec_entry if isinstance(spec_entry, tuple) else (spec_entry,)
        kept = tuple(a for a in axes if a not in batch_axes)
        return None if not kept else kept[0] if len(kept) == 1 else kept

    def one(sharding):
        return NamedSharding(sharding.mesh, P(*(drop(e) for e in sharding.spec)))

    return jax.tree.map(one, shardings)


def batch_sharding(cfg: MeshConfig, mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) axis over the ``batch`` rule's mesh axes, the rest replicated."""
    axes = _rules(cfg)["batch"]
    lead = axes[0] if len(axes) == 1 else (axes or None)
    return NamedSharding(mesh, P(lead, *([None] * (ndim - 1))))


def data_parallel_size(cfg: MeshConfig, sizes: Mapping[str, int]) -> int:
    """Number of batch shards: the product of the ``batch`` rule's mesh axis sizes."""
    return math.prod(sizes[a] for a in _rules(cfg).get("batch", ()))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


__all__ = [
    "batch_sharding",
    "check_rules",
    "compute_shardings",
    "data_parallel_size",
    "logical_axes",
    "make_mesh",
    "mesh_shape",
    "partition_spec",
    "path_str",
    "replicated",
    "tree_shardings",
]
