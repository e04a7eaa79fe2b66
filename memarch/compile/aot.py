"""Ahead-of-time compilation of a config's training, evaluation and decode steps for a TPU
topology, on a host without those chips.

:func:`compile_config` builds the steps exactly as ``memarch train`` does — the same
:func:`~memarch.train.validation.validate` checks, :func:`~memarch.train.mesh.make_mesh`,
:func:`~memarch.train.setup.make_setup` (model graph, optimiser, train state),
:func:`~memarch.train.mesh.tree_shardings` and :meth:`TrainSetup.train_step` — but over the
topology's devices (:func:`memarch.compile.topology.topology_devices`) and with abstract inputs
only (``jax.ShapeDtypeStruct`` with shardings: no array is ever made), then lowers and compiles
each step and reads the executable: memory per chip, XLA's FLOP and time estimates, the
collectives in its HLO and the sharding warnings XLA logged while compiling.

The steps:

* ``train``: the jitted ``step(state, batch) -> (state, metrics)`` of the trainer (state
  donated), on one global training batch;
* ``eval``: the held-out loss of the evaluation loop — ``forward`` and the masked
  cross-entropy sums (:func:`memarch.train.step.masked_ce_sums`), the step of
  :func:`memarch.eval.text.evaluate_text` — on a batch of the training shape, parameters stored
  and gathered for use as in training (:func:`memarch.train.mesh.compute_shardings`);
* ``decode``: one token of generation, ``model(token [B, 1], cache=cache)`` with the mixers'
  decode caches for ``B = batch_size`` rows of up to ``seq_len`` tokens (caches donated, their
  batch axis split like the training batch where it divides).

The batch is ``{"inputs", "targets"[, "segment_ids"]}: int32[batch_size, L]`` — for task
``text`` the packed rows of ``data.seq_len`` tokens (with ``segment_ids``), for a recall task
the first training example's shape (the longest training slice), as the trainer's loader
would feed.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from memarch.compile.capture import capture_logs, sharding_warnings
from memarch.compile.flops import ModelFlops, model_flops
from memarch.compile.hlo import collective_counts
from memarch.compile.topology import Chip, parse_topology, topology_devices
from memarch.data.pipeline import train_examples
from memarch.errors import ConfigError, UserError
from memarch.kernels import compile_target
from memarch.models.forward import forward
from memarch.train.checkpoint import abstract_like
from memarch.train.config import TrainConfig
from memarch.train.mesh import (
    batch_sharding,
    compute_shardings,
    make_mesh,
    mesh_shape,
    tree_shardings,
)
from memarch.train.setup import TrainSetup, make_setup, predicted_vocab
from memarch.train.step import masked_ce_sums
from memarch.train.validation import validate, validate_data, validate_model

STEPS = ("train", "eval", "decode")
GIB = 2**30


class MemoryFitError(UserError):
    """A compiled step needs more memory per chip than the chip's HBM."""


_OUT_OF_HBM = re.compile(r"RESOURCE_EXHAUSTED: (Ran out of memory in memory space hbm|.*HBM)[^\n]*")


@dataclasses.dataclass(frozen=True)
class StepReport:
    """What one compiled step needs and does, per chip."""

    name: str  # train | eval | decode
    memory: dict[str, int]  # bytes per chip: arguments, outputs, aliased, temporaries, code, total
    xla_flops: float  # XLA's cost analysis: FLOPs of one call on one chip
    xla_seconds: float | None  # XLA's estimated time of one call (cost analysis), if given
    collectives: dict[str, int]  # collective ops in the optimised HLO
    warnings: list[str]  # sharding warnings XLA logged while compiling
    compile_seconds: float  # lower + compile wall time

    @property
    def total_bytes(self) -> int:
        return self.memory["total"]


@dataclasses.dataclass(frozen=True)
class CompileReport:
    """The compiled steps of one config on one topology (see :mod:`memarch.compile.report`)."""

    config: str  # the config's name
    topology: str  # e.g. "v5e:16x16"
    chip: Chip
    num_chips: int
    mesh: dict[str, int]  # resolved (data, fsdp, tensor)
    batch_size: int
    seq_len: int
    compute_dtype: str
    remat: str  # model.remat if the model has it, else "none"
    params: int  # parameters of the model
    model_flops: ModelFlops  # model FLOPs of one training step (all chips)
    steps: dict[str, StepReport]


def memory_stats(compiled) -> dict[str, int]:
    """Per-chip bytes from ``compiled.memory_analysis()``: ``total = arguments + outputs −
    aliased + temporaries + generated code`` (donated inputs alias their outputs: counted once)."""
    m = compiled.memory_analysis()
    out = {
        "arguments": int(m.argument_size_in_bytes),
        "outputs": int(m.output_size_in_bytes),
        "aliased": int(m.alias_size_in_bytes),
        "temporaries": int(m.temp_size_in_bytes),
        "generated_code": int(m.generated_code_size_in_bytes),
    }
    out["total"] = (
        out["arguments"]
        + out["outputs"]
        - out["aliased"]
        + out["temporaries"]
        + out["generated_code"]
    )
    return out


def _cost(compiled) -> dict[str, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return dict(cost or {})


def compile_step(name: str, lower: Callable[[], Any], device: jax.Device) -> StepReport:
    """Lowers and compiles (``lower()`` returns a ``jax.stages.Lowered``) for ``device``'s chip,
    capturing XLA's log. Tracing, lowering and compiling run under
    :func:`memarch.kernels.compile_target`, so Pallas kernels are chosen and lowered for that
    chip, not for this host."""
    start = time.perf_counter()
    with capture_logs() as log, compile_target(device):
        compiled = lower().compile()
    seconds = time.perf_counter() - start
    cost = _cost(compiled)
    optimal = cost.get("optimal_seconds")
    return StepReport(
        name=name,
        memory=memory_stats(compiled),
        xla_flops=float(cost.get("flops", 0.0)),
        xla_seconds=float(optimal) if optimal and optimal > 0 else None,
        collectives=collective_counts(compiled.as_text()),
        warnings=sharding_warnings(log.text),
        compile_seconds=seconds,
    )


def batch_spec(cfg: TrainConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of one global training batch (no sharding; see the module docstring)."""
    if cfg.data.task == "text":  # packed rows (memarch.data.text.packed_rows): no corpus read
        row = {k: ((cfg.data.seq_len,), np.int32) for k in ("inputs", "targets", "segment_ids")}
    else:
        first = train_examples(cfg.data)[0]
        row = {k: (np.shape(v), np.asarray(v).dtype) for k, v in first.items()}
    return {k: jax.ShapeDtypeStruct((cfg.batch_size, *s), d) for k, (s, d) in row.items()}


def check_config(cfg: TrainConfig, topology: str, num_devices: int) -> dict[str, int]:
    """:func:`validate` against the topology's chips (data sizes without reading a corpus) and
    the model built abstractly; the resolved mesh sizes. A mesh that does not fit the topology
    is a :class:`ConfigError` naming both."""
    try:
        mesh_shape(cfg.mesh, num_devices)
    except ValueError as err:
        raise ConfigError(
            f"mesh (data={cfg.mesh.data}, fsdp={cfg.mesh.fsdp}, tensor={cfg.mesh.tensor}) does "
            f"not fit topology {topology} ({num_devices} chips): {err}"
        ) from None
    sizes = validate(cfg, num_devices, data=False)
    validate_data(cfg.data)
    validate_model(cfg)
    return sizes


def _leading_split(mesh, axes: tuple[str, ...], shape: tuple[int, ...]) -> NamedSharding:
    """The leading axis over ``axes`` where their size divides it, else replicated."""
    size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if not shape or not axes or shape[0] % size:
        return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(axes if len(axes) > 1 else axes[0]))


def _eval_lowered(setup: TrainSetup, params, batch, compute):
    graphdef, num_classes = setup.graphdef, predicted_vocab(setup.cfg)

    def eval_step(params, batch):  # memarch.eval.text.evaluate_text's step (float32 weights)
        params = jax.lax.with_sharding_constraint(params, compute)  # gathered as in training
        logits, _, _ = forward(nnx.merge(graphdef, params), batch)
        return masked_ce_sums(logits, batch["targets"], num_classes)

    return jax.jit(eval_step).lower(params, batch)


def _decode_lowered(
    setup: TrainSetup, params, compute, mesh, batch_axes, batch_size: int, max_len: int
):
    graphdef = setup.graphdef

    def init_cache(params):
        return nnx.merge(graphdef, params).init_cache(batch_size, max_len, jnp.float32)

    cache = jax.eval_shape(init_cache, params)
    cache = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=_leading_split(mesh, batch_axes, x.shape)
        ),
        cache,
    )
    token = jax.ShapeDtypeStruct(
        (batch_size, 1), jnp.int32, sharding=_leading_split(mesh, batch_axes, (batch_size, 1))
    )

    def decode_step(params, cache, token):
        params = jax.lax.with_sharding_constraint(params, compute)  # gathered as in training
        logits, cache = nnx.merge(graphdef, params)(token, cache=cache)
        return logits[:, -1], cache

    return jax.jit(decode_step, donate_argnums=1).lower(params, cache, token)


def compile_config(
    cfg: TrainConfig,
    topology: str,
    *,
    steps: Sequence[str] = STEPS,
    devices: Sequence[jax.Device] | None = None,
    log: Callable[[str], None] | None = None,
) -> CompileReport:
    """Compiles ``steps`` (of :data:`STEPS`) of ``cfg`` for ``topology`` (``"v5e:16x16"``) and
    reports them. ``devices`` replaces the topology's devices (tests); a bad topology name is a
    :class:`~memarch.compile.topology.TopologyError`, a mesh that does not fit it a
    ``ConfigError``, both before anything is compiled."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise ConfigError(f"steps must be a non-empty subset of {list(STEPS)}; got {list(steps)}")
    chip, _ = parse_topology(topology)
    devices = list(topology_devices(topology) if devices is None else devices)
    sizes = check_config(cfg, topology, len(devices))
    mesh = make_mesh(cfg.mesh, devices)
    setup = make_setup(cfg)
    abstract = setup.abstract_state()
    shardings = tree_shardings(cfg.mesh, mesh, abstract)
    state = abstract_like(abstract, shardings)
    compute = compute_shardings(cfg.mesh, shardings["params"])
    sharding = batch_sharding(cfg.mesh, mesh)
    spec = batch_spec(cfg)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in spec.items()}
    seq_len = next(iter(spec.values())).shape[1]
    lead = sharding.spec[0]
    axes = () if lead is None else tuple(lead) if isinstance(lead, tuple) else (lead,)
    lowerers = {
        "train": lambda: setup.train_step(
            state_shardings=shardings, batch_shardings=sharding
        ).lower(state, batch),
        "eval": lambda: _eval_lowered(setup, state["params"], batch, compute),
        "decode": lambda: _decode_lowered(
            setup, state["params"], compute, mesh, axes, cfg.batch_size, seq_len
        ),
    }
    reports = {}
    for name in (s for s in STEPS if s in steps):
        if log is not None:
            log(f"{cfg.name} on {topology}: compiling the {name} step …")
        try:
            reports[name] = compile_step(name, lowerers[name], devices[0])
        except jax.errors.JaxRuntimeError as err:
            found = _OUT_OF_HBM.search(str(err))
            if found is None:
                raise
            raise MemoryFitError(  # libtpu's compiler refuses a program that cannot fit
                f"{cfg.name} does not fit {topology}: the {name} step's per-chip memory is over "
                f"the HBM (libtpu: {found.group(0).removeprefix('RESOURCE_EXHAUSTED: ')}); a "
                f"{chip.name} chip has {chip.hbm_gib:g} GiB HBM (shard more: mesh.fsdp, "
                "mesh.tensor; or lower batch_size, raise grad_accum_steps, set model.remat)"
            ) from None
    return CompileReport(
        config=cfg.name,
        topology=topology,
        chip=chip,
        num_chips=len(devices),
        mesh=sizes,
        batch_size=cfg.batch_size,
        seq_len=int(seq_len),
        compute_dtype=cfg.compute_dtype,
        remat=str(getattr(cfg.model, "remat", "none")),
        params=int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract["params"]))),
        model_flops=model_flops(cfg, abstract["params"], int(seq_len)),
        steps=reports,
    )


__all__ = [
    "GIB",
    "MemoryFitError",
    "STEPS",
    "CompileReport",
    "StepReport",
    "batch_spec",
    "check_config",
    "compile_config",
    "compile_step",
    "memory_stats",
]
