"""The `memarch` command line: a one-step smoke run of every config, eval, and bad input: each
user error is one or two lines naming the field, file and line, or path (exit status 2)."""

import shutil
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
    if cfg.data.task != "text":  # evaluate one slice (validate() checks every slice first)
        extra.append(f"data.eval_slices=({tuple(cfg.data.eval_slices[0])!r},)")
    run = tmp_path / "run"
    args = ["train", "--config", str(path), "--tiny", "--workdir", str(run), "--no-progress"]
    assert main([*args, *SMOKE, *extra, f"data.data_dir='{tmp_path / 'tfds'}'"]) == 0
    out = capsys.readouterr().out
    assert "step      1  loss" in out and ("| model |" in out or "bits/byte" in out)
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


def assert_user_error(command: str, match: str, capsys) -> str:
    """stderr is one or two lines ``memarch COMMAND: error: …`` containing ``match``."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    assert lines[0].startswith(f"memarch {command}: error:") and match in err, err
    return err


TINY_RUN = ["--tiny", "--no-progress", *SMOKE]
MQAR = str(ROOT / "configs" / "mqar_attention.py")


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["model.d_model=-8"], "model.d_model must be an int >= 1; got -8"),
        (["model.num_heads=0"], "model.num_heads must be an int >= 1"),
        (["model.pattern=AA", "model.num_layers=3"], "model.num_layers (3) disagrees"),
        (["model.mixers.monet.p=3"], "unknown mixer 'monet' (did you mean 'moneta'?)"),
        (["model.pattern=AT", "model.mixers.titans_lmm.lr=three"], "unknown option 'lr'"),
        (["model.mixers.moneta.p=three"], "model.mixers.moneta.p expects float"),
        (["data.eval_slices=((64, 999),)"], "data.eval_slices: task 'mqar' slice"),
    ],
)
def test_silent_acceptance_is_now_one_line_before_training(overrides, match, tmp_path, capsys):
    """Each of these was ignored, or failed after training or deep inside the model; now each
    is refused in one line, exit status 2, before the run directory is written."""
    run = tmp_path / "run"
    args = ["train", "--config", MQAR, "--workdir", str(run), *TINY_RUN, *overrides]
    assert main(args) == 2
    assert_user_error("train", match, capsys)
    assert not (run / "params").exists()


CONFIG_HEAD = "from memarch.train.config import TrainConfig\n\n\n"


@pytest.mark.parametrize(
    "body,line,match",
    [
        (
            "def get_config():\n    return TrainConfig(num_steps=1, seed=2, bogus=3)\n",
            5,
            "TypeError: TrainConfig.__init__() got an unexpected keyword argument 'bogus'",
        ),
        (
            "def get_config():\n    raise ValueError('num_steps must be small')\n",
            5,
            "num_steps must be small",
        ),
        (
            "x = undefined_name\n\n\ndef get_config():\n    return TrainConfig()\n",
            4,
            "NameError: name 'undefined_name' is not defined",
        ),
        ("def get_config(size):\n    return TrainConfig()\n", 4, "TypeError: get_config()"),
        ("def get_config():\n    return 3\n", 4, "must return a TrainConfig"),
        ("def get_config(:\n", 4, "SyntaxError"),
    ],
)
def test_a_config_file_that_raises_is_named_with_its_line(body, line, match, tmp_path, capsys):
    path = tmp_path / "my_config.py"
    path.write_text(CONFIG_HEAD + body)
    assert main(["train", "--config", str(path), "--no-progress"]) == 2
    err = assert_user_error("train", match, capsys)
    assert f"{path}, line {line}:" in err and "Traceback" not in err


def test_missing_paths_are_named(tmp_path, capsys):
    missing = tmp_path / "no_run"
    assert main(["eval", "--checkpoint", str(missing)]) == 2
    assert_user_error("eval", str(missing), capsys)
    assert main(["train", "--config", str(tmp_path / "nope.py")]) == 2
    assert_user_error("train", "nope.py' does not exist", capsys)
    assert (
        main(
            [
                "ablate",
                "--config",
                MQAR,
                "--grid-file",
                str(tmp_path / "g.py"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert_user_error("ablate", "g.py' does not exist", capsys)


def test_demo_bad_override_is_one_line(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-progress", "num_step=1"]) == 2
    assert_user_error("demo", "did you mean 'num_steps'", capsys)


def test_debug_flag_and_environment_show_the_traceback(tmp_path, monkeypatch, capsys):
    args = ["train", "--config", MQAR, "--workdir", str(tmp_path), "model.d_model=-8"]
    for argv in (["--debug", *args], [*args, "--debug"]):
        with pytest.raises(ValueError, match="model.d_model"):
            main(argv)
    monkeypatch.setenv("MEMARCH_DEBUG", "1")
    with pytest.raises(ValueError, match="model.d_model"):
        main(args)
    monkeypatch.setenv("MEMARCH_DEBUG", "0")
    assert main(args) == 2
    assert_user_error("train", "model.d_model", capsys)


def test_an_internal_bug_keeps_its_traceback(monkeypatch):
    """Only user errors become one line; any other exception propagates (a traceback)."""

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("memarch.cli.run_demo", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(["demo", "--no-progress"])


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("memarch")  # installed beside the venv's python
    assert exe.is_file(), f"the memarch console script is missing: {exe}"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "eval" in out and "demo" in out


def test_a_missing_checkpoint_metadata_file_is_named(tmp_path, capsys):
    """A run stopped before params/ was written whose checkpoint lost a metadata file: the
    evaluation fails in one or two lines naming that checkpoint, exit status 2."""
    run = tmp_path / "run"
    args = ["train", "--config", MQAR, "--workdir", str(run), "--no-progress", *SMOKE]
    assert main(args) == 0
    capsys.readouterr()
    shutil.rmtree(run / "params")
    (metadata,) = (run / "checkpoints").glob("*/meta/metadata")
    metadata.unlink()
    assert main(["eval", "--checkpoint", str(run), "data.num_eval_examples=4"]) == 2
    err = assert_user_error("eval", str(run / "checkpoints"), capsys)
    assert "Traceback" not in err


def test_data_prepare_subcommand_writes_shards(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("first document\n\nsecond document\n\nthird one\n")
    out = tmp_path / "prepared"
    argv = ["data", "prepare", str(corpus), "--out", str(out), "--tokenizer", "byte"]
    assert main([*argv, "--txt-mode", "paragraph", "--no-progress"]) == 0
    assert (out / "index.json").is_file()
    assert "documents" in capsys.readouterr().out
    missing = ["--out", str(tmp_path / "x"), "--tokenizer", str(tmp_path / "missing.json")]
    assert main(["data", "prepare", str(corpus), *missing]) == 2  # one clear line, exit 2
    assert "missing.json" in capsys.readouterr().err
