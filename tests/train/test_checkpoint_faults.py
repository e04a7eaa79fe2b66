"""Checkpoint faults and refusals: a damaged newest checkpoint is named and passed over (the
resumed run ends bit-identical to an uninterrupted one), nothing restores wrong numbers,
nothing starts from step 0 silently, and refused resumes leave the run directory untouched.

Every run here is the same 8-step config (checkpoints 2, 4, 6, 8), so one compilation is
reused through the test run's persistent compilation cache (tests/conftest.py)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from tiny_run import TINY, kill_during_run, params_to_numpy

from memarch.train.checkpoint import Checkpointer, CheckpointError, abstract_like
from memarch.train.config import apply_overrides
from memarch.train.integrity import nonfinite_arrays
from memarch.train.resume import config_changes, plan_run
from memarch.train.setup import make_setup
from memarch.train.trainer import train

CKPT = ["checkpoint.every=2", "checkpoint.keep=5"]
BASE = apply_overrides(TINY, ["num_steps=8", *CKPT])


def _params(res) -> dict[str, np.ndarray]:
    return params_to_numpy(nnx.to_pure_dict(nnx.state(res.model, nnx.Param)))


def _assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _tree_hash(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (and every directory)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """BASE trained uninterrupted: its run directory and final parameters."""
    work = tmp_path_factory.mktemp("reference") / "run"
    res = train(BASE, workdir=work, log=lambda s: None)
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["2", "4", "6", "8"]
    return work, _params(res)


def _copy(reference, tmp_path: Path) -> Path:
    work = tmp_path / "run"
    shutil.copytree(reference[0], work)
    return work


def _data_file(ckpt: Path) -> Path:
    """The largest array data file orbax wrote (ocdbt, zstd-compressed zarr chunks)."""
    files = [p for p in (ckpt / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _flip_bytes(ckpt: Path) -> None:
    f = _data_file(ckpt)
    data = bytearray(f.read_bytes())
    at = int(len(data) * 0.7)  # inside a compressed chunk: decodes without error, to wrong values
    data[at : at + 16] = bytes(b ^ 0xFF for b in data[at : at + 16])
    f.write_bytes(bytes(data))


def _truncate(ckpt: Path) -> None:
    f = _data_file(ckpt)
    os.truncate(f, f.stat().st_size // 2)


FAULTS = {
    "bytes flipped inside a read array": _flip_bytes,
    "array file truncated": _truncate,
    "array file emptied": lambda c: os.truncate(_data_file(c), 0),
    "tree metadata deleted": lambda c: (c / "state" / "_METADATA").unlink(),
    "JSON record deleted": lambda c: (c / "meta" / "metadata").unlink(),
    "tree metadata malformed JSON": lambda c: (c / "state" / "_METADATA").write_text("{oops"),
    "JSON record malformed JSON": lambda c: (c / "meta" / "metadata").write_text("{oops"),
    "state/ missing": lambda c: shutil.rmtree(c / "state"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_resume_passes_over_a_damaged_newest_checkpoint(reference, tmp_path, fault):
    # Given a finished run whose newest checkpoint (8) is damaged
    work = _copy(reference, tmp_path)
    FAULTS[fault](work / "checkpoints" / "8")
    # When it is resumed
    messages = []
    res = train(BASE, workdir=work, resume=True, log=messages.append)
    # Then checkpoint 8 is named with a reason and set aside, and the run continues from 6
    text = "\n".join(messages)
    assert f"checkpoint 8 in {work / 'checkpoints'}: " in text, text
    assert "set aside as 8.rejected" in text and (work / "checkpoints" / "8.rejected").is_dir()
    assert "resumed from checkpoint 6" in text and "passed over [8]" in text
    assert res.resumed_from == 6 and [h["step"] for h in res.history] == [7, 8]
    # And it ends bit-identical to the uninterrupted run
    _assert_same_params(_params(res), reference[1])


def test_flipped_bytes_are_read_as_wrong_numbers_without_verification(reference, tmp_path):
    # The injection matters: orbax alone restores the flipped checkpoint without an error
    work = _copy(reference, tmp_path)
    _flip_bytes(work / "checkpoints" / "8")
    abstract = make_setup(BASE).abstract_state()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
    with ocp.StandardCheckpointer() as raw:
        good = raw.restore(reference[0] / "checkpoints" / "8" / "state", target)
        bad = raw.restore(work / "checkpoints" / "8" / "state", target)
    changed = [
        a
        for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(bad), strict=True)
        if not np.array_equal(np.asarray(a), np.asarray(b))
    ]
    assert changed
    # while the verified restore names the changed array
    ckpt = Checkpointer(work / "checkpoints", BASE.checkpoint, read_only=True)
    try:
        with pytest.raises(
            CheckpointError, match="checkpoint 8 .* fails verification: .*content changed"
        ):
            ckpt.restore(8, target)
    finally:
        ckpt.close()


def test_no_verifying_checkpoint_is_a_clear_error_and_touches_nothing(reference, tmp_path):
    work = _copy(reference, tmp_path)
    for step in (2, 4, 6, 8):
        _truncate(work / "checkpoints" / str(step))
    before = _tree_hash(work)
    with pytest.raises(CheckpointError) as err:
        train(BASE, workdir=work, resume=True, log=lambda s: None)
    msg = str(err.value)
    assert "no checkpoint verifies" in msg and all(
        f"{s}: cannot be read" in msg for s in (2, 4, 6, 8)
    )
    assert _tree_hash(work) == before


def test_kill_9_during_an_asynchronous_save_resumes_bit_exactly(reference, tmp_path):
    # Given a run saving (asynchronously) every step, killed with SIGKILL at a random step
    kill_at = random.Random().randint(2, 6)
    work = tmp_path / "run"
    overrides = ["num_steps=8", "checkpoint.every=1", "checkpoint.keep=5"]
    kill_during_run(work, overrides, kill_at, timeout=400)
    complete = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    cfg = apply_overrides(TINY, overrides)
    if not complete:  # killed before the first save finished: a clear error, not step 0
        with pytest.raises(ValueError, match="no checkpoint in .* to resume from"):
            train(cfg, workdir=work, resume=True, log=lambda s: None)
        return
    # When resumed: from the newest complete checkpoint, ending bit-identical
    messages = []
    res = train(cfg, workdir=work, resume=True, log=messages.append)
    assert res.resumed_from == complete[-1] and res.final_step == 8, (complete, kill_at)
    assert f"resumed from checkpoint {complete[-1]}" in "\n".join(messages)
    _assert_same_params(_params(res), reference[1])


def _blow_up(tmp_path: Path, learning_rate: str) -> tuple[int, int]:
    """Trains BASE at ``learning_rate`` (checkpointing every step) until the guard stops it;
    returns ``(bad step, last good checkpoint)`` and checks that checkpoint is finite."""
    cfg = apply_overrides(BASE, [f"optim.learning_rate={learning_rate}", "checkpoint.every=1"])
    with pytest.raises(FloatingPointError) as err:
        train(cfg, workdir=tmp_path, log=lambda s: None)
    msg = str(err.value)
    bad = int(msg.split(" at step ")[1].split(";")[0])
    good = int(msg.split("last good checkpoint: step ")[1].split(" ")[0])
    assert good == bad - 1 and "(verified finite)" in msg, msg
    assert max(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == good
    abstract = make_setup(cfg).abstract_state()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
    ckpt = Checkpointer(tmp_path / "checkpoints", cfg.checkpoint, read_only=True)
    try:
        state, _ = ckpt.restore(good, target)  # verifies checksums and finiteness
    finally:
        ckpt.close()
    assert nonfinite_arrays(state) == [] and int(state["step"]) == good
    return bad, good


LOWER = ["optim.learning_rate=1e-3", "checkpoint.every=1"]


def test_learning_rate_1e6_stops_naming_a_finite_checkpoint(tmp_path):
    # Given learning_rate=1e6: the guard stops at the first non-finite step and names a
    # checkpoint whose parameters and optimiser state are finite (and verify)
    bad, good = _blow_up(tmp_path, "1e6")
    # When resumed with a lower learning rate: a schedule change, refused unless acknowledged
    lower = apply_overrides(BASE, LOWER)
    with pytest.raises(ValueError, match="optim.learning_rate: saved 1000000.0, requested 0.001"):
        train(lower, workdir=tmp_path, resume=True, log=lambda s: None)
    # Then the acknowledged resume restores that very checkpoint. Adam's steps of ~1e5 have
    # already made its (finite) weights overflow the next forward pass at any learning rate,
    # so the guard stops again at the same step, naming the same checkpoint: nothing non-finite
    # is ever saved
    messages = []
    with pytest.raises(
        FloatingPointError, match=f"at step {bad}; last good checkpoint: step {good} "
    ):
        train(lower, workdir=tmp_path, resume=True, allow_schedule_change=True, log=messages.append)
    assert f"resumed from checkpoint {good} in" in "\n".join(messages)


@pytest.mark.parametrize(
    "overrides,keys",
    [
        (["model.d_model=64"], ["model.d_model: saved 32, requested 64"]),
        (["model.num_heads=4"], ["model.num_heads: saved 2, requested 4"]),
        (
            ["model.d_model=64", "model.num_heads=4", "data.vocab_size=16"],
            ["data.vocab_size: saved 32, requested 16", "model.d_model", "model.num_heads"],
        ),
    ],
)
def test_resume_with_another_model_is_refused_before_anything_is_touched(
    reference, tmp_path, overrides, keys
):
    work = _copy(reference, tmp_path)
    before = _tree_hash(work)
    with pytest.raises(ValueError, match="the requested model differs") as err:
        train(apply_overrides(BASE, overrides), workdir=work, resume=True, log=lambda s: None)
    assert all(k in str(err.value) for k in keys), str(err.value)
    assert _tree_hash(work) == before


def test_schedule_change_needs_acknowledgement_and_allowed_changes_are_listed(reference, tmp_path):
    work = _copy(reference, tmp_path)
    before = _tree_hash(work)
    for change in ("num_steps=12", "optim.warmup_steps=2", "optim.learning_rate=0.01"):
        with pytest.raises(ValueError, match="--allow-schedule-change") as err:
            train(apply_overrides(BASE, [change]), workdir=work, resume=True, log=lambda s: None)
        assert change.split("=")[0] + ": saved" in str(err.value)
    assert _tree_hash(work) == before
    messages = []
    res = train(
        apply_overrides(BASE, ["log_every=2"]), workdir=work, resume=True, log=messages.append
    )
    assert res.resumed_from == 8 and res.final_step == 8
    assert any("allowed setting log_every: saved 1, requested 2" in m for m in messages)


def test_training_into_an_existing_run_is_refused_or_goes_to_a_new_subdirectory(
    reference, tmp_path
):
    work = _copy(reference, tmp_path)
    before = _tree_hash(work)
    with pytest.raises(ValueError, match="already holds a run .*--resume.*--new-run"):
        train(BASE, workdir=work, log=lambda s: None)
    assert _tree_hash(work) == before
    plan = plan_run(BASE, work, new_run=True)
    assert plan.run_dir == work / "run-2" and not plan.resume
    assert any("new run in" in m and "run-2" in m for m in plan.messages)
    with pytest.raises(ValueError, match="exclude each other"):
        plan_run(BASE, work, resume=True, new_run=True)


def test_resume_without_a_checkpoint_is_an_error_unless_auto(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint in .*--resume=auto"):
        train(BASE, workdir=tmp_path / "mistyped", resume=True, log=lambda s: None)
    assert not (tmp_path / "mistyped").exists()
    plan = plan_run(BASE, tmp_path / "mistyped", resume="auto")
    assert not plan.resume and "starting a fresh run" in plan.messages[0]
    with pytest.raises(ValueError, match="resume must be one of"):
        plan_run(BASE, tmp_path, resume="yes")


def test_config_changes_are_dotted_keys_with_both_values():
    saved = {"model": {"d_model": 32, "mixers": {"gla": {"chunk_size": 16}}}, "num_steps": 8}
    new = {"model": {"d_model": 32, "mixers": {"gla": {"chunk_size": 32}}}, "num_steps": 9}
    changes = config_changes(saved, new)
    assert [(c.key, c.saved, c.requested, c.kind) for c in changes] == [
        ("model.mixers.gla.chunk_size", 16, 32, "structure"),
        ("num_steps", 8, 9, "schedule"),
    ]


def test_rotation_keeps_the_newest_verified_checkpoint(reference, tmp_path):
    # A save that fails its read-back is never counted good: older checkpoints stay
    work = _copy(reference, tmp_path)
    abstract = make_setup(BASE).abstract_state()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
    cfg = apply_overrides(BASE, ["checkpoint.keep=1", "checkpoint.async_save=False"])
    messages = []
    ckpt = Checkpointer(work / "checkpoints", cfg.checkpoint, log=messages.append)
    try:
        state, meta = ckpt.restore(8, target)
        ckpt.save(9, state, dict(meta, step=9))
        ckpt.manager.wait_until_finished()
        _flip_bytes(work / "checkpoints" / "9")
        ckpt.wait()
        assert ckpt.failed.keys() == {9} and "saved checkpoint 9" in messages[-1]
        assert ckpt.all_steps() == [8, 9]  # 8 is the newest verified: kept
        ckpt.save(10, state, dict(meta, step=10))
    finally:
        ckpt.close()
    # once 10 verified, keep=1 leaves only it (the failed 9 and the old 8 go)
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["10"]
