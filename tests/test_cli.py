"""The `memarch` command line: a one-step smoke run of every config, eval, and bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from memarch.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))
SMOKE = ["num_steps=1", "batch_size=4", "data.num_eval_examples=4", "log_every=1"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_one_step_of_every_config(path, tmp_path, capsys):
    from memarch.train.config import load_config

    cfg = load_config(path, tiny=True)
    extra = []
    if cfg.data.task == "text" and not Path(cfg.data.text_file).is_file():
        # no shared corpus here: a small generated one keeps the smoke run (never skipped)
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(
            "\n\n".join(f"line {i}: " + "to be or not " * (i % 9) for i in range(400))
        )
        extra = [f"data.text_file='{corpus}'"]
    run = tmp_path / "run"
    args = ["train", "--config", str(path), "--tiny", "--workdir", str(run), "--no-progress"]
    assert main([*args, *SMOKE, *extra, f"data.data_dir='{tmp_path / 'tfds'}'"]) == 0
    out = capsys.readouterr().out
    assert "step      1  loss" in out and ("| model |" in out or "eval loss" in out)
    assert (run / "params").is_dir() and (run / "config.json").is_file()


def test_train_then_eval(tmp_path, capsys):
    cfg = str(ROOT / "configs" / "mqar_attention.py")
    assert (
        main(["train", "--config", cfg, "--workdir", str(tmp_path), "--no-progress", *SMOKE]) == 0
    )
    trained_table = capsys.readouterr().out.split("| model |")[1].split("saved to")[0]
    assert (
        main(["eval", "--config", cfg, "--workdir", str(tmp_path), "data.num_eval_examples=4"]) == 0
    )
    evaluated = capsys.readouterr().out.split("| model |")[1].strip().splitlines()
    assert evaluated[:3] == trained_table.strip().splitlines()  # header, rule, model row
    assert evaluated[3].startswith("| chance |") and evaluated[4].startswith("| oracle | 1.000")


@pytest.mark.parametrize(
    "args,match",
    [
        (["optim.learning_rat=1"], "did you mean 'optim.learning_rate'"),
        (["model.pattern=LXA"], "unknown letters"),
        (["data.vocab_size=8"], "vocab_size"),
    ],
)
def test_bad_input_is_one_clear_line(args, match, capsys):
    cfg = str(ROOT / "configs" / "mqar_attention.py")
    assert main(["train", "--config", cfg, "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert "memarch train: error:" in err and match in err and "Traceback" not in err


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("memarch")  # installed beside the venv's python
    assert exe.is_file(), f"the memarch console script is missing: {exe}"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "eval" in out and "demo" in out
