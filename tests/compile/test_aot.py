"""``memarch compile``: every config's tiny form compiles for a small TPU topology on this CPU
host; one config's train, eval and decode steps through the command line, with its report;
bad input (topology name, mesh against the topology's chips, a model too big for the chip) is
one clear error each."""

import json
import re
from pathlib import Path

import pytest
from test_cli import CONFIGS, SMOKE, assert_user_error  # the tiny forms and their shrinking

from memarch.cli import main
from memarch.compile import compile_config
from memarch.compile.aot import batch_spec
from memarch.train import setup as train_setup
from memarch.train.config import apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = "v5e:2x2"  # 4 chips


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_train_step_of_every_tiny_config_compiles_for_tpu(path):
    cfg = apply_overrides(load_config(path, tiny=True), SMOKE)
    report = compile_config(cfg, TOPOLOGY, steps=("train",))
    train = report.steps["train"]
    assert report.num_chips == 4 and report.mesh["data"] * report.mesh["fsdp"] == 4
    # the donated state aliases its outputs; the batch is split, so XLA all-reduces gradients
    assert 0 < train.memory["aliased"] <= train.memory["arguments"] <= train.memory["total"]
    assert train.xla_flops > 0 and train.collectives["all-reduce"] >= 1
    assert report.model_flops.total > 0 and train.warnings == []


def test_compile_command_writes_the_report_of_three_steps(tmp_path, capsys):
    cfg = str(ROOT / "configs" / "lm_1p3b_hybrid.py")
    args = ["compile", "--config", cfg, "--tiny", "--topology", TOPOLOGY, "--workdir"]
    assert main([*args, str(tmp_path), "--step-time", "0.01", "batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "| train |" in out and "| eval |" in out and "| decode |" in out
    data = json.loads((tmp_path / "compile_v5e_2x2.json").read_text())
    assert set(data["steps"]) == {"train", "eval", "decode"} and data["fits"] is True
    assert data["step_time"] == {"seconds": 0.01, "source": "given"} and data["mfu_bound"] > 0
    # the train step does the eval step's forward pass and more
    assert data["steps"]["train"]["xla_flops"] > data["steps"]["eval"]["xla_flops"] > 0
    assert (tmp_path / "compile_v5e_2x2.md").read_text().startswith("# lm_1p3b_hybrid_tiny on")


@pytest.mark.parametrize(
    "args,match",
    [
        (
            ["--topology", "v9z:2x2"],
            "unknown TPU chip 'v9z'; accepted: ['v4', 'v5e', 'v5p', 'v6e']",
        ),
        (["--topology", "v5e:2x2", "mesh.data=3"], "does not fit topology v5e:2x2 (4 chips)"),
        (["--topology", "v5e:2x2", "--steps", "train,fwd"], "steps must be a non-empty subset"),
    ],
)
def test_bad_input_is_one_clear_line(args, match, tmp_path, capsys):
    cfg = str(ROOT / "configs" / "mqar_hybrid.py")
    assert main(["compile", "--config", cfg, "--workdir", str(tmp_path), *args]) == 2
    assert_user_error("compile", match, capsys)


def test_a_model_too_big_for_one_chip_names_its_memory_and_the_hbm(tmp_path, capsys):
    # the 340M config's 32,000-id head on one v5e chip without FSDP: its float32 logits for
    # 256 × 2048 tokens alone are 62.5 GiB (one layer kept, to compile fast); libtpu's compiler
    # refuses it, naming the memory it needs
    cfg = str(ROOT / "configs" / "lm_340m_hybrid.py")
    args = ["compile", "--config", cfg, "--topology", "v5e:1x1", "--steps", "train"]
    assert main([*args, "--workdir", str(tmp_path), "model.pattern=A"]) == 2
    err = assert_user_error(
        "compile", "lm_340m_hybrid does not fit v5e:1x1: the train step", capsys
    )
    assert re.search(r"\(\d+\.\d+G\) exceeds available HBM \(15\.75G\)", err), err
    assert "a v5e chip has 16 GiB HBM" in err


def test_batch_spec_of_text_and_recall_tasks():
    text = load_config(ROOT / "configs" / "lm_340m_hybrid.py")
    spec = batch_spec(text)  # no corpus is read
    assert {k: v.shape for k, v in spec.items()} == {
        k: (256, 2048) for k in ("inputs", "targets", "segment_ids")
    }
    mqar = load_config(ROOT / "configs" / "mqar_hybrid.py")
    assert set(batch_spec(mqar)) == {"inputs", "targets"}


def test_fsdp_times_tensor_compiles_without_involuntary_rematerialization(monkeypatch):
    """The weights gathered over the batch axes before use (compute_shardings) keep every
    activation split over the batch only; without that constraint XLA reshards the
    residual-stream gradient by replicating it, and says so (the capture sees libtpu's log)."""
    tp = ["mesh.data=1", "mesh.fsdp=2", "mesh.tensor=2", "batch_size=4"]
    cfg = apply_overrides(load_config(ROOT / "configs" / "lm_340m_hybrid.py", tiny=True), tp)
    fixed = compile_config(cfg, TOPOLOGY, steps=("train",)).steps["train"]
    assert fixed.warnings == [] and fixed.collectives["all-gather"] > 0
    monkeypatch.setattr(train_setup, "compute_shardings", lambda mesh_cfg, shardings: None)
    unconstrained = compile_config(cfg, TOPOLOGY, steps=("train",)).steps["train"]
    assert any("Involuntary full rematerialization" in w for w in unconstrained.warnings)
