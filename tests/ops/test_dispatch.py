"""``impl="auto"`` follows the target the op is compiled for, not the host's default backend.

On this CPU host ``"auto"`` runs the XLA chunk form. Traced with inputs sharded over TPU
devices (libtpu's compile-only topology), the same call must pick the Pallas kernel, so a pod
config compiled from a CPU host gets the kernels it will run with.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from memarch.kernels import delta_rule as delta_kernel
from memarch.kernels import flash_attention as flash_kernel
from memarch.kernels import gla as gla_kernel
from memarch.kernels import tpu_topology_devices
from memarch.ops._dispatch import resolve_impl

KERNELS = {"gla": gla_kernel, "gated_delta_rule": delta_kernel, "flash_attention": flash_kernel}


def _resolved(kernel, x) -> list[str]:
    """``resolve_impl("auto", …)`` as seen while tracing ``x`` (abstract: nothing runs)."""
    seen = []

    def f(q):
        seen.append(resolve_impl("auto", kernel, chunk_size=64, segment_ids=None, x=q))
        return q

    jax.jit(f).trace(x)
    return seen


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_auto_is_chunk_on_the_cpu_host(name):
    assert _resolved(KERNELS[name], jnp.zeros((2, 64, 1, 64), jnp.float32)) == ["chunk"]


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_auto_is_pallas_for_inputs_sharded_over_tpu_chips(name):
    devices = tpu_topology_devices("v5e:2x2")
    mesh = Mesh(devices, ("data",))
    x = jax.ShapeDtypeStruct(
        (4, 128, 1, 128), jnp.bfloat16, sharding=NamedSharding(mesh, P("data"))
    )
    assert _resolved(KERNELS[name], x) == ["pallas"]
