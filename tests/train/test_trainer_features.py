"""Trainer features on one CPU device: gradient accumulation, bfloat16 compute, NaN handling
(stop, visible skips), SIGTERM and Ctrl-C, metrics files and ``memarch train --resume``."""

import dataclasses
import json
import os
import signal

import numpy as np
import pytest
from tiny_run import TINY

import memarch.train.trainer as trainer
from memarch.cli import main
from memarch.eval.periodic import periodic_evaluation
from memarch.train.config import apply_overrides

SHORT = dataclasses.replace(TINY, num_steps=4)


def _losses(res):
    return np.array([h["loss"] for h in res.history])


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """SHORT in float32, writing TensorBoard files and an MFU estimate to a run directory."""
    work = tmp_path_factory.mktemp("short")
    cfg = dataclasses.replace(SHORT, tensorboard=True, peak_tflops=1.0)
    res = trainer.train(cfg, workdir=work, log=lambda s: None, evaluate=periodic_evaluation(cfg))
    return res, work


def test_grad_accumulation_matches_the_full_batch(short_run):
    accum = trainer.train(dataclasses.replace(SHORT, grad_accum_steps=2), log=lambda s: None)
    np.testing.assert_allclose(_losses(accum), _losses(short_run[0]), rtol=1e-5)


def test_bfloat16_compute_keeps_float32_master_weights(short_run):
    res = trainer.train(dataclasses.replace(SHORT, compute_dtype="bfloat16"), log=lambda s: None)
    assert np.all(np.isfinite(_losses(res)))
    assert res.model.blocks[0].mixer.q_proj.kernel[...].dtype == np.float32
    np.testing.assert_allclose(_losses(res)[0], _losses(short_run[0])[0], rtol=2e-2)


BLOW_UP = ["optim.learning_rate=1e12", "optim.grad_clip=0.0", "optim.warmup_steps=0"]


def test_nonfinite_loss_stops_naming_step_and_last_checkpoint(tmp_path):
    cfg = apply_overrides(SHORT, [*BLOW_UP, "num_steps=8", "checkpoint.every=1"])
    with pytest.raises(FloatingPointError) as err:
        trainer.train(cfg, workdir=tmp_path, log=lambda s: None)
    msg = str(err.value)
    bad = int(msg.split(" at step ")[1].split(";")[0])
    assert f"last good checkpoint: step {bad - 1} in {tmp_path / 'checkpoints'}" in msg
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())[-1] == bad - 1


def test_nonfinite_loss_can_skip_the_batch():
    cfg = apply_overrides(SHORT, [*BLOW_UP, "num_steps=8", "on_nonfinite='skip'"])
    messages = []
    res = trainer.train(cfg, log=messages.append)
    assert res.final_step == 8 and sum(h["skipped"] for h in res.history) >= 1
    assert all(np.isfinite(v).all() for v in [res.model.embed.embedding[...]])
    # skips are counted and reported
    assert res.skipped_steps == sum(h["skipped"] for h in res.history)
    assert f"skipped {res.skipped_steps} of 8 steps as non-finite" in messages[-1]
    # and too many in a row stop the run with a clear error
    with pytest.raises(
        FloatingPointError, match=r"1 steps in a row skipped .*max_consecutive_skips=1"
    ):
        trainer.train(dataclasses.replace(cfg, max_consecutive_skips=1), log=lambda s: None)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_saves_a_checkpoint_and_returns(tmp_path, monkeypatch, sig):
    """SIGTERM (pre-emption) and SIGINT (Ctrl-C) both save and return."""
    loader_call = trainer.BatchLoader.__call__

    def call(self, step):
        if step == 5:
            os.kill(os.getpid(), sig)
        return loader_call(self, step)

    monkeypatch.setattr(trainer.BatchLoader, "__call__", call)
    messages = []
    before = signal.getsignal(sig)  # SIG_IGN for SIGINT in a background job
    res = trainer.train(
        dataclasses.replace(TINY, num_steps=8), workdir=tmp_path, log=messages.append
    )
    assert res.preempted and res.final_step == 6
    assert f"{sig.name} at step 6; checkpoint 6 saved" in messages[-1]
    assert (tmp_path / "checkpoints" / "6").is_dir() and not (tmp_path / "params").exists()
    # the handler is restored afterwards
    assert signal.getsignal(sig) is before


def test_metrics_jsonl_and_tensorboard(short_run):
    tmp_path = short_run[1]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for key in ("loss", "accuracy", "grad_norm", "lr", "step_time", "tokens_per_s", "mfu"):
        assert key in train_rows[-1], key
    assert any(k.startswith("eval/") for k in rows[-1])
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "config.json").read_text())["mesh"]["data"] == -1


def test_cli_resume_continues_from_the_latest_checkpoint(tmp_path, capsys, monkeypatch):
    cfg_file = tmp_path / "tiny.py"
    cfg_file.write_text(
        f"import sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from tiny_run import TINY\n\n\ndef get_config():\n    return TINY\n"
    )
    args = ["train", "--config", str(cfg_file), "--workdir", str(tmp_path / "w"), "--no-progress"]
    assert main([*args, "num_steps=3"]) == 0
    capsys.readouterr()
    # num_steps changes the learning-rate schedule: refused without the acknowledgement
    assert main([*args, "--resume", "num_steps=5", "checkpoint.keep=1"]) == 2
    assert "num_steps: saved 3, requested 5" in capsys.readouterr().err
    resume = [*args, "--resume", "num_steps=5", "checkpoint.keep=1"]
    assert main([*resume, "--allow-schedule-change"]) == 0
    out = capsys.readouterr().out
    assert "step      4" in out and "step      1 " not in out
    assert sorted(p.name for p in (tmp_path / "w" / "checkpoints").iterdir()) == ["5"]
    # training into the run again without --resume is refused; --resume=auto on a new one starts
    assert main([*args, "num_steps=5"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args, "--resume", "num_steps=5"]) == 0  # nothing left to train
    capsys.readouterr()
    fresh = ["train", "--config", str(cfg_file), "--workdir", str(tmp_path / "f"), "--no-progress"]
    assert main([*fresh, "--resume"]) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert main([*fresh, "--resume=auto", "num_steps=2"]) == 0
    assert "step      2" in capsys.readouterr().out
