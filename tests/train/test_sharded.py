"""Acceptance tests of sharded training: 8 fake CPU devices, restore under another mesh.
Multi-device runs happen in fresh interpreters (``tiny_run.run``): this process's JAX already
started with one device. Two processes on 127.0.0.1 (a 2×2×2 mesh across them) and exact
resume after SIGKILL run on a prepared text corpus: tests/train/test_text_training.py."""

import dataclasses
import shutil

import numpy as np
import pytest
from flax import nnx
from tiny_run import TINY, max_rel_err, params_to_numpy, run

from memarch.train.checkpoint import Checkpointer, abstract_like
from memarch.train.mesh import make_mesh, tree_shardings
from memarch.train.setup import make_setup
from memarch.train.trainer import train

MESH_222 = ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]


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
    assert len(out["losses"]) == 20 and max_rel_err(out["losses"], ref_losses) <= 1e-5
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
    assert max_rel_err([h["loss"] for h in res.history], ref_losses[10:]) <= 1e-5
