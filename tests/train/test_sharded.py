"""Acceptance tests of sharded training: 8 fake CPU devices, two processes on 127.0.0.1,
restore under another mesh, exact resume after SIGKILL. Multi-device runs happen in fresh
interpreters (``tiny_run.run``): this process's JAX already started with one device."""

import dataclasses
import json
import random
import shutil
import socket

import numpy as np
import pytest
from flax import nnx
from tiny_run import TINY, kill_during_run, params_to_numpy, run

from memarch.train.checkpoint import Checkpointer, abstract_like
from memarch.train.mesh import make_mesh, tree_shardings
from memarch.train.setup import make_setup
from memarch.train.trainer import train

MESH_222 = ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.fixture(scope="module")
def one_device_run():
    """The reference: TINY on this process's single device."""
    res = train(TINY, log=lambda s: None)
    return [h["loss"] for h in res.history], params_to_numpy(
        nnx.to_pure_dict(nnx.state(res.model, nnx.Param))
    )


def test_eight_devices_follow_one_device_and_restore_on_another_mesh(one_device_run, tmp_path):
    # Given a data=2, fsdp=2, tensor=2 run on 8 fake devices, checkpointing every 10 steps
    work = tmp_path / "run"
    out = run(
        {
            "overrides": [*MESH_222, "checkpoint.every=10", "checkpoint.keep=5"],
            "workdir": str(work),
            "params_out": str(tmp_path / "p8.npz"),
        },
        devices=8,
    )
    # Then the parameters really are sharded and the loss follows the 1-device trajectory
    assert out["devices"] == 8
    assert out["specs"] == {"q_proj": "P('fsdp', 'tensor')", "embedding": "P('tensor', 'fsdp')"}
    ref_losses, ref_params = one_device_run
    assert len(out["losses"]) == 20 and _rel(out["losses"], ref_losses) <= 1e-5
    p8 = dict(np.load(tmp_path / "p8.npz"))
    for k, v in ref_params.items():
        np.testing.assert_allclose(p8[k], v, rtol=2e-4, atol=2e-6, err_msg=k)

    # When its step-20 checkpoint is restored on this process's 1-device mesh: bit-exact
    ckpt = Checkpointer(work / "checkpoints", TINY.checkpoint)
    assert ckpt.all_steps() == [10, 20]
    mesh = make_mesh(TINY.mesh)
    abstract = make_setup(TINY).abstract_state()
    state, meta = ckpt.restore(
        20, abstract_like(abstract, tree_shardings(TINY.mesh, mesh, abstract))
    )
    ckpt.close()
    assert meta["data"] == {"kind": "random_access", "next_step": 20} and int(state["step"]) == 20
    restored = params_to_numpy(state["params"])
    for k, v in p8.items():
        np.testing.assert_array_equal(restored[k], v, err_msg=k)

    # And resuming from step 10 on 1 device continues the same trajectory
    shutil.rmtree(work / "checkpoints" / "20")
    cfg = dataclasses.replace(TINY, mesh=dataclasses.replace(TINY.mesh, data=1))
    res = train(cfg, workdir=work, resume=True, log=lambda s: None)
    assert res.resumed_from == 10 and [h["step"] for h in res.history] == list(range(11, 21))
    assert _rel([h["loss"] for h in res.history], ref_losses[10:]) <= 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_single_process(one_device_run, tmp_path):
    # Given two processes on 127.0.0.1 with 4 fake CPU devices each (one 2×2×2 mesh)
    port = _free_port()
    common = [
        *MESH_222,
        "distributed.initialize=True",
        f"distributed.coordinator_address='127.0.0.1:{port}'",
        "distributed.num_processes=2",
    ]
    procs = [
        run(
            {"overrides": [*common, f"distributed.process_id={i}"], "workdir": str(tmp_path)},
            devices=4,
            wait=False,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    out = json.loads(outs[0][0].strip().splitlines()[-1])
    # Then they see 8 devices and train like one process does
    assert out["devices"] == 8
    assert _rel(out["losses"], one_device_run[0]) <= 1e-5
    assert (tmp_path / "checkpoints" / "20").is_dir() and (tmp_path / "params").is_dir()


def test_resume_after_sigkill_is_bit_exact(one_device_run, tmp_path):
    # Given a run checkpointing (asynchronously) every step, killed with SIGKILL at a random step
    kill_at = random.Random().randint(4, 15)
    work = tmp_path / "run"
    overrides = ["checkpoint.every=1", "checkpoint.keep=3"]
    kill_during_run(work, overrides, kill_at, timeout=240)

    # Then only complete checkpoints count (an unfinished save is a temporary directory)
    cfg = dataclasses.replace(
        TINY, checkpoint=dataclasses.replace(TINY.checkpoint, every=1, keep=3)
    )
    names = sorted(p.name for p in (work / "checkpoints").iterdir())
    complete = [n for n in names if n.isdigit()]
    assert complete, names
    ckpt = Checkpointer(work / "checkpoints", cfg.checkpoint)
    latest = ckpt.latest_step()
    ckpt.close()
    assert latest == max(int(n) for n in complete), (names, kill_at)

    # When resumed, the run ends with parameters bit-identical to an uninterrupted run
    # (checkpoint settings do not change the arithmetic: the reference is the plain 1-device run)
    resumed = train(cfg, workdir=work, resume=True, log=lambda s: None)
    assert resumed.resumed_from == latest and resumed.final_step == 20
    a = params_to_numpy(nnx.to_pure_dict(nnx.state(resumed.model, nnx.Param)))
    b = one_device_run[1]
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} (killed at {kill_at})")
