"""Tests for memarch.kernels._sharding: Pallas kernels under a sharded jit.

The end-to-end check runs in a fresh interpreter with 8 fake CPU devices (the device count must
be set before JAX starts): gla(impl="pallas") under ``jax.set_mesh`` on a (data 2, fsdp 2,
tensor 2) mesh, with batch- and head-sharded inputs, must equal the unsharded run on outputs,
final state and every gradient, and its jaxpr must hold a shard_map.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
from jax.sharding import AbstractMesh

from memarch.kernels._sharding import batch_head_spec, shard_batch_heads

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import functools, json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from memarch.ops.gla import gla
    from memarch.testing import rel_rms

    rng = np.random.default_rng(0)
    b, t, h, dk, dv = 4, 37, 2, 8, 16
    q, k = (jnp.asarray(rng.standard_normal((b, t, h, dk)), jnp.float32) for _ in range(2))
    v = jnp.asarray(rng.standard_normal((b, t, h, dv)), jnp.float32)
    g = -jnp.asarray(rng.uniform(0.0, 1.0, (b, t, h, dk)), jnp.float32)
    s0 = jnp.asarray(rng.standard_normal((b, h, dk, dv)), jnp.float32)
    do = jnp.asarray(rng.standard_normal((b, t, h, dv)), jnp.float32)

    def loss(q, k, v, g, s0):
        o, s = gla(q, k, v, g, initial_state=s0, output_final_state=True, impl="pallas",
                   chunk_size=16)
        return jnp.sum(o * do) + jnp.sum(s), (o, s)

    step = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))
    ref = step(q, k, v, g, s0)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                         axis_types=(AxisType.Auto,) * 3)
    with jax.set_mesh(mesh):
        seq = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None))
        state = NamedSharding(mesh, P(("data", "fsdp"), "tensor", None, None))
        args = [jax.device_put(x, seq) for x in (q, k, v, g)] + [jax.device_put(s0, state)]
        out = step(*args)
        jaxpr = str(jax.make_jaxpr(step)(*args))
    errs = [rel_rms(a, r) for a, r in zip(jax.tree.leaves(out), jax.tree.leaves(ref))]
    print(json.dumps({"errs": errs, "shard_map": "shard_map" in jaxpr,
                      "devices": len(jax.devices())}))
    """
)


def test_pallas_gla_under_sharded_jit_matches_unsharded():
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["devices"] == 8 and res["shard_map"]
    assert len(res["errs"]) == 7  # o, S_T and 5 gradients
    assert max(res["errs"]) <= 1e-5, res["errs"]


def test_batch_head_spec_uses_axes_that_divide():
    mesh = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
    assert batch_head_spec(mesh, 4, 2) == (("data", "fsdp"), "tensor")
    assert batch_head_spec(mesh, 2, 3) == ("data", None)  # fsdp would not divide; H = 3
    assert batch_head_spec(mesh, 1, 4) == (None, "tensor")
    assert batch_head_spec(AbstractMesh((4,), ("tensor",)), 8, 2) == (None, None)


def test_no_mesh_calls_directly():
    calls = []

    def fn(x):
        calls.append(jax.sharding.get_abstract_mesh().empty)
        return x + 1

    assert int(shard_batch_heads(fn, jax.numpy.zeros((2, 3)))[0, 0]) == 1
    assert calls == [True]
