"""`memarch eval --checkpoint DIR --task NAME`: a run trained for two steps is evaluated on
other tasks (with chance and oracle rows), from params/ or from its last checkpoint, and bad
input is one clear line."""

import shutil
from pathlib import Path

import pytest

from memarch.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "mqar_attention.py")
SMOKE = [
    "num_steps=2",
    "batch_size=4",
    "log_every=1",
    "data.num_eval_examples=4",
    "data.train_slices=((32,2),)",
    "data.eval_slices=((32,2),)",
]
FEW = ["data.num_eval_examples=4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli_eval") / "run"
    assert main(["train", "--config", CONFIG, "--workdir", str(run), "--no-progress", *SMOKE]) == 0
    return run


def rows(out: str) -> dict[str, list[str]]:
    """Table rows by first cell (the header row under the key 'model')."""
    table = [line for line in out.splitlines() if line.startswith("| ")]
    return {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in table}


def test_eval_on_another_task_with_baselines(run_dir, capsys):
    slices = "data.eval_slices=((32,2),(48,3))"
    assert main(["eval", "--checkpoint", str(run_dir), "--task", "induction", slices, *FEW]) == 0
    out = capsys.readouterr().out
    assert "task induction (4 test examples per slice" in out
    table = rows(out)
    assert table["model"] == ["L=32, triggers=2", "L=48, triggers=3", "mean"]
    assert table["oracle"] == ["1.000", "1.000", "1.000"]
    assert table["chance"][:2] == [f"{1 / 255:.3f}"] * 2
    assert set(table) == {"model", "attention", "chance", "oracle"}


def test_checkpoint_form_matches_config_form_and_last_checkpoint(run_dir, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(run_dir), *FEW]) == 0  # the run's own task
    by_checkpoint = rows(capsys.readouterr().out)
    # the --config form needs the training overrides again; --checkpoint reads them
    assert main(["eval", "--config", CONFIG, "--workdir", str(run_dir), *SMOKE[3:]]) == 0
    assert rows(capsys.readouterr().out) == by_checkpoint
    # a run without final params/ (pre-empted) is evaluated from its newest checkpoint
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial, ignore=shutil.ignore_patterns("params"))
    assert (partial / "checkpoints").is_dir() and not (partial / "params").exists()
    assert main(["eval", "--checkpoint", str(partial), *FEW]) == 0
    assert rows(capsys.readouterr().out) == by_checkpoint
    assert by_checkpoint["model"] == ["L=32, N=2", "mean"]


@pytest.mark.parametrize(
    "args,match",
    [
        (["--task", "inductoin"], "task must be one of"),
        (["--task", "set_disjointness", "data.eval_slices=((200,4),)"], "vocab_size"),
        (["--task", "forgetting_mqar"], "overwrite_fraction"),
        (["--task", "selective_copy", "data.eval_slices=((8,4),)"], "seq_len"),
        (["--task", "mqar", "data.eval_slice=1"], "did you mean 'data.eval_slices'"),
    ],
)
def test_bad_task_input_is_one_clear_line(run_dir, args, match, capsys):
    assert main(["eval", "--checkpoint", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert "memarch eval: error:" in err and match in err and "Traceback" not in err


def test_bad_checkpoint_arguments(run_dir, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "nothing"), "--task", "mqar"]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run_dir), "--config", CONFIG]) == 2
    assert "either --checkpoint" in capsys.readouterr().err
    assert main(["eval", "--task", "mqar"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_eval_names_the_step_it_scores_and_takes_step(run_dir, capsys):
    assert main(["eval", "--checkpoint", str(run_dir), "--step", "2", *FEW]) == 0
    out = capsys.readouterr().out
    assert f"scoring checkpoint 2 in {run_dir / 'checkpoints'}" in out
    assert main(["eval", "--checkpoint", str(run_dir), *FEW]) == 0
    out = capsys.readouterr().out
    assert "scoring checkpoint 2 " in out and "(the newest that verifies)" in out
    assert main(["eval", "--checkpoint", str(run_dir), "--step", "1", *FEW]) == 2
    assert "--step 1: no checkpoint 1" in capsys.readouterr().err


def test_config_form_uses_the_runs_own_model(tmp_path, capsys):
    # the README's example: train with a model override, evaluate with --config --workdir
    run = tmp_path / "run"
    train = ["train", "--config", CONFIG, "--workdir", str(run), "--no-progress", *SMOKE]
    assert main([*train, "model.pattern=LA"]) == 0
    capsys.readouterr()
    assert main(["eval", "--config", CONFIG, "--workdir", str(run), *SMOKE[3:]]) == 0
    out = capsys.readouterr().out
    assert "scoring checkpoint 2" in out and "| model |" in out
