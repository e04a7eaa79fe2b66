"""Every Pallas kernel, forward and backward, compiles for the devices it targets, on a CPU host.

TPU: libtpu's compile-only devices (:func:`memarch.kernels.tpu_topology_devices`) make
``jax.jit(...).lower(...).compile()`` run the real TPU compiler, Mosaic included. For each
kernel and chip one jit of (outputs, gradients of all inputs) is compiled — the primal forward,
the forward that saves residuals and every backward kernel — in bf16 with lane-sized head
dims; every kernel must be in the executable as a ``tpu_custom_call`` named after it. The
kernels are called with their defaults (``interpret=None``, no schedule): the target alone must
make them compile, found two ways — v5e: a 2x2 slice with the batch sharded over its 4 chips
by the inputs' ``NamedSharding`` (no mesh context; the kernels also wrap themselves in a
``shard_map``); v6e: one chip made current by ``jax.set_mesh``.

GPU: no compiler without a GPU, so the kernels are lowered (``jax.export``) for an abstract
H100 named by ``compile_target``, which must pick the Triton lowering and the "loop" schedule.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractDevice, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from memarch.kernels import compile_target, tpu_topology_devices
from memarch.kernels.delta_rule import gated_delta_rule_pallas
from memarch.kernels.flash_attention import flash_attention
from memarch.kernels.gla import gla_pallas

# chip -> how the kernels learn it (module docstring)
CHIPS = {"v5e:2x2": "inputs", "v6e:1x1": "set_mesh"}
B, T, H, K, V = 4, 128, 1, 64, 128  # T: one 128-block of flash attention, 4 chunks of 32

KERNELS = {
    "gla": (
        lambda q, k, v, g, beta: gla_pallas(q, k, v, g, chunk_size=32, output_final_state=True),
        {"gla_fwd", "gla_bwd"},
    ),
    "gated_delta_rule": (
        lambda q, k, v, g, beta: gated_delta_rule_pallas(
            q, k, v, beta, g[..., 0], chunk_size=32, output_final_state=True
        ),
        {"gated_delta_rule_fwd", "gated_delta_rule_bwd"},
    ),
    "flash_attention": (
        lambda q, k, v, g, beta: flash_attention(
            q, k, v, jnp.cumsum(g[..., 0], axis=1), beta, scale=K**-0.5
        ),
        {"flash_attention_fwd", "flash_attention_dq", "flash_attention_dkv"},
    ),
}


def _outputs_and_grads(fn):
    """jit of ``(fn(*args), ∇ Σ fn(*args))`` over all five inputs."""

    def loss(*args):
        return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(fn(*args)))

    return jax.jit(lambda *a: (fn(*a), jax.grad(loss, argnums=tuple(range(len(a))))(*a)))


def _inputs(sharding=None):
    """q, k ``[B, T, H, K]``, v ``[B, T, H, V]`` bf16; g ``[B, T, H, K]`` (per-channel gate),
    beta ``[B, T, H]`` float32 — as shapes, placed with ``sharding``."""
    s = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)
    bf16, f32 = jnp.bfloat16, jnp.float32
    return (
        s((B, T, H, K), bf16), s((B, T, H, K), bf16), s((B, T, H, V), bf16),
        s((B, T, H, K), f32), s((B, T, H), f32),
    )  # fmt: skip


def _tpu_kernels(compiled_text: str) -> list[str]:
    """Names of the ``tpu_custom_call`` instructions (the Mosaic kernels), suffixes dropped."""
    calls = re.findall(r"%([\w.-]+) = .*custom_call_target=\"tpu_custom_call\"", compiled_text)
    return [re.sub(r"\.\d+$", "", name) for name in calls]


@pytest.mark.parametrize("chip", list(CHIPS))
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernel_compiles_for_tpu(kernel, chip):
    fn, expected = KERNELS[kernel]
    devices = tpu_topology_devices(chip)
    mesh = Mesh(np.array(devices), ("data",))
    step = _outputs_and_grads(fn)
    if CHIPS[chip] == "inputs":
        args = _inputs(NamedSharding(mesh, P("data")))  # batch over the slice's chips
        compiled = step.lower(*args).compile()
    else:
        with jax.set_mesh(mesh):
            compiled = step.lower(*_inputs(NamedSharding(mesh, P()))).compile()
    names = _tpu_kernels(compiled.as_text())
    assert set(names) == expected, names


H100 = AbstractDevice(device_kind="NVIDIA H100", num_cores=None, platform="cuda")
TRITON = "__gpu$xla.gpu.triton"


@pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated")
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernel_lowers_for_gpu_target(kernel):
    """compile_target(H100) alone turns the default call into Triton kernels ("loop")."""
    fn, expected = KERNELS[kernel]
    checks = [jax.export.DisabledSafetyCheck.custom_call(TRITON)]
    export = jax.export.export(_outputs_and_grads(fn), platforms=("cuda",), disabled_checks=checks)
    args = [jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in _inputs()]
    with compile_target(H100):
        module = export(*args).mlir_module()
    calls = [line for line in module.splitlines() if f"custom_call @{TRITON}(" in line]
    names = {m for line in calls for m in re.findall(r'name = "(\w+)"', line)}
    assert len(calls) >= len(expected) and names == expected, names
