"""Tests for memarch.kernels._sharding: Pallas kernels under a sharded jit.

:func:`kernel_mesh` (the current mesh, else the inputs' mesh) is checked on traced types; the
inputs-only path end to end by tests/kernels/test_kernel_compile.py (v5e:2x2). The end-to-end
check here runs in a fresh interpreter with 8 fake CPU devices (the device count must
be set before JAX starts): gla, gated_delta_rule and decay_attention (GQA, forget gate + key
slope) with impl="pallas" under ``jax.set_mesh`` on a (data 2, fsdp 2, tensor 2) mesh, with
batch- and head-sharded inputs, must equal the unsharded run on outputs, final states and every
gradient, and each jaxpr must hold a shard_map.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from memarch.kernels._sharding import batch_head_spec, kernel_mesh, shard_batch_heads

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from memarch.ops import decay_attention, gated_delta_rule, gla
    from memarch.testing import rel_rms

    rng = np.random.default_rng(0)
    b, t, h, dk, dv = 4, 37, 2, 8, 16
    rand = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
    q, k, v, s0, do = rand(b, t, h, dk), rand(b, t, h, dk), rand(b, t, h, dv), \
        rand(b, h, dk, dv), rand(b, t, h, dv)
    g_ch = -jnp.asarray(rng.uniform(0.0, 1.0, (b, t, h, dk)), jnp.float32)
    g_h = -jnp.asarray(rng.uniform(0.0, 0.5, (b, t, h)), jnp.float32)
    beta = jnp.asarray(rng.uniform(0.1, 1.0, (b, t, h)), jnp.float32)
    kn = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    # GQA attention: 4 query heads on 2 KV heads, FoX forget gate + TRIM-KV slope
    qa, doa = rand(b, t, 2 * h, dk), rand(b, t, 2 * h, dv)
    slope = -jnp.asarray(rng.uniform(0.0, 0.2, (b, t, 2 * h)), jnp.float32)

    def gla_loss(q, k, v, g, s0):
        o, s = gla(q, k, v, g, initial_state=s0, output_final_state=True, impl="pallas",
                   chunk_size=16)
        return jnp.sum(o * do) + jnp.sum(s), (o, s)

    def gdn_loss(q, k, v, g, beta, s0):
        o, s = gated_delta_rule(q, k, v, g, beta, initial_state=s0, output_final_state=True,
                                impl="pallas", chunk_size=16)
        return jnp.sum(o * do) + jnp.sum(s), (o, s)

    def attn_loss(q, k, v, lf, sl):
        o = decay_attention(q, k, v, lf, sl, impl="pallas", block_size=16)
        return jnp.sum(o * doa), o

    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                         axis_types=(AxisType.Auto,) * 3)
    seq = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None))
    gate = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor"))
    state = NamedSharding(mesh, P(("data", "fsdp"), "tensor", None, None))
    cases = {
        "gla": (gla_loss, (q, k, v, g_ch, s0), (seq,) * 4 + (state,)),
        "gated_delta_rule": (gdn_loss, (q, kn, v, g_h, beta, s0), (seq,) * 3 + (gate,) * 2
                             + (state,)),
        "decay_attention": (attn_loss, (qa, k, v, jnp.concatenate([g_h, g_h], -1), slope),
                            (seq,) * 3 + (gate,) * 2),
    }
    res = {"devices": len(jax.devices())}
    for name, (loss, args, shardings) in cases.items():
        step = jax.jit(jax.grad(loss, argnums=tuple(range(len(args))), has_aux=True))
        ref = step(*args)
        with jax.set_mesh(mesh):
            sharded = [jax.device_put(x, s) for x, s in zip(args, shardings)]
            out = step(*sharded)
            jaxpr = str(jax.make_jaxpr(step)(*sharded))
        errs = [rel_rms(a, r) for a, r in zip(jax.tree.leaves(out), jax.tree.leaves(ref))]
        res[name] = {"errs": errs, "shard_map": "shard_map" in jaxpr}
    print(json.dumps(res))
    """
)

# outputs + gradients per op: gla o, S_T, 5 grads; gdn o, S_T, 6 grads; attention o, 5 grads
EXPECTED_LEAVES = {"gla": 7, "gated_delta_rule": 8, "decay_attention": 6}


def test_pallas_kernels_under_sharded_jit_match_unsharded():
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["devices"] == 8
    for name, leaves in EXPECTED_LEAVES.items():
        assert res[name]["shard_map"], f"{name}: no shard_map in the jaxpr"
        assert len(res[name]["errs"]) == leaves, (name, res[name]["errs"])
        assert max(res[name]["errs"]) <= 1e-5, (name, res[name]["errs"])


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


def test_kernel_mesh_is_the_current_mesh_else_the_inputs_mesh():
    cpu = np.array(jax.devices()[:1])
    placed = jax.ShapeDtypeStruct(
        (2, 3), np.float32, sharding=NamedSharding(Mesh(cpu, ("data",)), P())
    )
    seen = []
    trace = lambda: jax.jit(lambda x: seen.append(kernel_mesh(None, x)) or x).trace(placed)
    trace()  # no mesh set: the mesh the input was placed on
    with jax.set_mesh(Mesh(cpu, ("tensor",))):  # a current mesh wins
        trace()
    assert [m.axis_names for m in seen] == [("data",), ("tensor",)]
    assert kernel_mesh(jax.numpy.ones(2)).empty
