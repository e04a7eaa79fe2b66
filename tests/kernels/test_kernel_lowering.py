"""The delta-rule and flash-attention kernels lower for the devices they target, without one.

``jax.export`` lowers (does not compile or run) forward + backward for TPU (Mosaic, the "grid"
schedule, under an abstract TPU v5e device) and for an abstract H100 (Triton, the "loop"
schedule); every ``pallas_call`` must become a kernel custom call. This catches block shapes
or ops the device lowerings reject (e.g. TPU's (8, 128) block rule), which interpret mode
never sees. (tests/kernels/test_gla_kernel.py does the same for GLA.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

from memarch.kernels.delta_rule import gated_delta_rule_pallas
from memarch.kernels.flash_attention import flash_attention

TARGET = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}
DEVICE_KIND = {"tpu": "TPU v5 lite", "cuda": "NVIDIA H100"}
SCHEDULE = {"tpu": "grid", "cuda": "loop"}
# the block a compiled run uses: TPU rounds blocks up to 128 (kernels.flash_attention)
FLASH_BLOCK = {"tpu": 128, "cuda": 32}


def kernel_calls(fn, args, platform: str) -> int:
    """Custom calls of the device's kernel kind in ``fn``'s lowering for ``platform``."""
    target = TARGET[platform]
    checks = [jax.export.DisabledSafetyCheck.custom_call(target)]
    export = jax.export.export(jax.jit(fn), platforms=(platform,), disabled_checks=checks)
    device = jax.sharding.AbstractDevice(
        device_kind=DEVICE_KIND[platform], num_cores=1 if platform == "tpu" else None,
        platform=platform,
    )  # fmt: skip
    with jax.sharding.use_abstract_mesh(
        jax.sharding.AbstractMesh((1,), ("x",), abstract_device=device)
    ):
        exported = export(*args)
    return exported.mlir_module().count(f"custom_call @{target}(")


def shapes(b=2, t=100, h=2, dk=64, dv=32):
    s = jax.ShapeDtypeStruct
    return (
        s((b, t, h, dk), jnp.float32),
        s((b, t, h, dv), jnp.float32),
        s((b, t, h), jnp.float32),
    )


@pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated")
@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_delta_rule_kernels_lower(platform):
    q, v, gate = shapes()
    run = functools.partial(
        gated_delta_rule_pallas, chunk_size=32, interpret=False, schedule=SCHEDULE[platform]
    )

    def grads(q, k, v, beta, g):
        loss = lambda *a: sum(jnp.sum(x) for x in run(*a, output_final_state=True))
        return jax.grad(loss, argnums=(0, 1, 2, 3, 4))(q, k, v, beta, g)

    assert kernel_calls(grads, (q, q, v, gate, gate), platform) == 2  # forward, backward


@pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated")
@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_flash_attention_kernels_lower(platform):
    q, v, gate = shapes(t=256)
    block = FLASH_BLOCK[platform]
    run = functools.partial(
        flash_attention, scale=0.125, interpret=False, variant=SCHEDULE[platform],
        block_q=block, block_k=block,
    )  # fmt: skip

    def grads(q, k, v, lam, slope):
        return jax.grad(lambda *a: jnp.sum(run(*a)), argnums=(0, 1, 2, 3, 4))(q, k, v, lam, slope)

    assert kernel_calls(grads, (q, q, v, gate, gate), platform) == 3  # forward, dq, dk/dv
