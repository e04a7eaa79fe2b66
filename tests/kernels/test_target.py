"""Tests for memarch.kernels._target: which device kernels compile for, TPU topologies, and the
platform choice at start-up.

The target comes from an explicit ``compile_target``, else the current mesh's device, else the
inputs' sharding, else JAX's default backend (the CPU here); the choice is part of the jit
cache key. TPU topologies come from libtpu (dev extra) on this CPU host; bad names give one
ValueError naming the accepted forms. A fresh interpreter without ``JAX_PLATFORMS`` that calls
``choose_platform`` runs on the CPU and prints nothing, even when it asks for a topology.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractDevice, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from memarch.kernels import _target, compile_target, tpu_topology_devices
from memarch.kernels._target import target_device, target_platform

ROOT = Path(__file__).resolve().parents[2]
V5E = AbstractDevice(device_kind="TPU v5 lite", num_cores=1, platform="tpu")


def _traced_target(fn, *args) -> list:
    """What ``fn`` reports while ``jax.jit`` traces it with ``args``."""
    seen = []
    jax.jit(lambda *a: seen.append(fn(*a)) or a[0]).trace(*args)
    return seen


def test_default_target_is_the_default_backend():
    assert target_platform() == jax.default_backend() == "cpu"
    assert target_device().platform == "cpu"
    assert _traced_target(target_platform, jnp.ones(2)) == ["cpu"]


def test_target_from_inputs_then_mesh_then_explicit():
    (chip,) = tpu_topology_devices("v5e:1x1")
    mesh = Mesh(np.array([chip]), ("data",))
    on_tpu = jax.ShapeDtypeStruct((2,), jnp.float32, sharding=NamedSharding(mesh, P()))
    # the inputs' sharding names the chip (no mesh context)
    assert _traced_target(lambda x: (target_platform(x), target_device(x)), on_tpu) == [
        ("tpu", V5E)
    ]
    assert _traced_target(target_platform, jax.ShapeDtypeStruct((2,), jnp.float32)) == ["cpu"]
    # the current mesh names it for every kernel, with or without sharded inputs
    with jax.set_mesh(mesh):
        assert target_platform() == "tpu" and target_device() == V5E
    # an explicit choice wins over both
    with jax.set_mesh(mesh), compile_target("gpu"):
        assert target_platform() == "gpu" and target_device() is None
        assert _traced_target(target_platform, on_tpu) == ["gpu"]


def test_compile_target_device_becomes_the_abstract_device():
    with compile_target(V5E):
        mesh = jax.sharding.get_abstract_mesh()
        assert mesh.empty and mesh.abstract_device == V5E  # no sharding change
        assert target_platform() == "tpu" and target_device() == V5E
    assert jax.sharding.get_abstract_mesh().abstract_device is None
    with compile_target("cuda"):  # GPU spellings are one platform
        assert target_platform() == "gpu"


def test_compile_target_is_part_of_the_jit_cache_key():
    seen = []
    f = jax.jit(lambda x: seen.append(target_platform(x)) or x + 1)
    x = jnp.ones(3)
    f(x)
    with compile_target("tpu"):
        f.trace(x)
    f(x)  # cached CPU trace
    assert seen == ["cpu", "tpu"]


@pytest.mark.parametrize("bad", ["npu", "", 3, None])
def test_compile_target_rejects_unknown_targets(bad):
    with pytest.raises(ValueError, match=r"target must be one of \['cpu', 'gpu', 'tpu'\]"):
        with compile_target(bad):
            pass


def test_compile_target_contradicting_the_mesh_raises():
    v6e = AbstractDevice(device_kind="TPU v6 lite", num_cores=1, platform="tpu")
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), (), abstract_device=V5E)):
        with pytest.raises(ValueError, match="contradicts the current mesh"):
            with compile_target(v6e):
                pass


@pytest.mark.parametrize(
    "name, count, kind",
    [("v5e:2x2", 4, "TPU v5 lite"), ("v6e:1x1", 1, "TPU v6 lite"), ("v5p:2x2x1", 4, "TPU v5")],
)
def test_tpu_topology_devices(name, count, kind):
    devices = tpu_topology_devices(name)
    assert len(devices) == count
    assert {(d.platform, d.device_kind) for d in devices} == {("tpu", kind)}


@pytest.mark.parametrize(
    "name, why",
    [
        ("v5e", "not a topology name"),
        ("tpu-v5e-2x2", "not a topology name"),
        ("", "not a topology name"),
        ("v5e:0x2", "every axis needs at least one chip"),
        ("v9z:2x2", "libtpu rejected it"),
        ("v5e:2x3", "libtpu rejected it"),
        (3, "a topology name is a str"),
    ],
)
def test_tpu_topology_devices_rejects_bad_names(name, why):
    with pytest.raises(ValueError, match=rf"{why}.*accepted forms: .*v5e:2x2, v6e:2x2, v4:2x2x1"):
        tpu_topology_devices(name)


@pytest.mark.parametrize("attached", [False, True])
def test_choose_platform_unless_chosen(monkeypatch, attached):
    monkeypatch.setattr(_target, "_attached_accelerator", lambda: attached)
    monkeypatch.setenv("JAX_PLATFORMS", "")  # an explicit choice (let JAX choose) is kept
    assert _target.choose_platform() is None and os.environ["JAX_PLATFORMS"] == ""
    monkeypatch.delenv("JAX_PLATFORMS")
    _target.choose_platform()
    assert os.environ.get("JAX_PLATFORMS") == (None if attached else "cpu")


QUIET_START = textwrap.dedent(
    """
    import json
    from memarch.kernels import _target, choose_platform, tpu_topology_devices
    choose_platform()
    import jax
    jax.numpy.ones(1).block_until_ready()
    devices = tpu_topology_devices("v5e:2x2")
    print(json.dumps({"backend": jax.default_backend(), "tpu": len(devices),
                      "attached": _target._attached_accelerator()}))
    """
)


def test_fresh_process_starts_on_cpu_quietly():
    """No JAX_PLATFORMS: without an attached accelerator choose_platform picks the CPU, so JAX
    does not probe for a TPU, and asking for a topology afterwards loads libtpu without a word
    on stderr; with one attached, JAX keeps choosing it."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", QUIET_START], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["tpu"] == 4
    if res["attached"]:
        assert res["backend"] != "cpu"
    else:
        assert res["backend"] == "cpu" and proc.stderr == ""
