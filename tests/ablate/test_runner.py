"""The ablation runner: a 2×2 grid of tiny configs writes CSV / Markdown / PNG, a grid stopped
mid-way finishes only its missing cells, identical cells train once, and bad input stops
everything before training."""

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest

from memarch.ablate import parse_grid_args, run_grid, write_report
from memarch.ablate.cell import param_count
from memarch.cli import main
from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig
from memarch.train.trainer import train

TINY = TrainConfig(
    name="tiny",
    model=LMConfig(
        vocab_size=32,
        d_model=16,
        num_heads=2,
        pattern=None,  # the grid sets model.ratio over num_layers=2
        num_layers=2,
        ratio=1,
        mlp_hidden=0,
        mixers={"gated_deltanet": {"head_dim": 8, "chunk_size": 8}},
    ),
    data=DataConfig(
        vocab_size=32,
        train_slices=((16, 2),),
        eval_slices=((16, 2), (16, 4)),
        num_train_examples=64,
        num_eval_examples=4,
    ),
    optim=OptimConfig(warmup_steps=1),
    batch_size=4,
    num_steps=2,
    log_every=1,
    tensorboard=False,
)
GRID = ["model.ratio=0,1", "seed=0,1"]
CONFIG_SOURCE = """
import dataclasses

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig


def get_config():
    return TrainConfig(
        model=LMConfig(vocab_size=32, d_model=16, num_heads=2, pattern=None, num_layers=2,
                       ratio=1, mlp_hidden=0,
                       mixers={"gated_deltanet": {"head_dim": 8, "chunk_size": 8}}),
        data=DataConfig(vocab_size=32, train_slices=((16, 2),), eval_slices=((16, 2),),
                        num_train_examples=64, num_eval_examples=4),
        optim=OptimConfig(warmup_steps=1), batch_size=4, num_steps=2, log_every=1,
        tensorboard=False,
    )
"""  # ratio 0: attention, attention; 1: GDN, attention


class CountingTrain:
    """The real trainer, counting its calls; ``stop_at`` raises KeyboardInterrupt (a kill)."""

    def __init__(self, stop_at=None):
        self.names, self.stop_at = [], stop_at

    def __call__(self, cfg, **kw):
        if self.stop_at is not None and len(self.names) == self.stop_at:
            raise KeyboardInterrupt
        self.names.append(cfg.name)
        return train(cfg, **kw)


def test_two_by_two_grid_report_and_resume_after_a_kill(tmp_path):
    axes = parse_grid_args(GRID)
    first = CountingTrain(stop_at=2)
    with pytest.raises(KeyboardInterrupt):  # killed while starting the third cell
        run_grid(TINY, axes, tmp_path, progress=False, train_fn=first)
    assert first.names == ["model.ratio=0__seed=0", "model.ratio=0__seed=1"]
    done = {p.parent.name for p in tmp_path.glob("cells/*/result.json")}
    assert done == set(first.names)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("cells/*/result.json")}

    second = CountingTrain()
    run = run_grid(TINY, axes, tmp_path, progress=False, train_fn=second)
    assert second.names == ["model.ratio=1__seed=0", "model.ratio=1__seed=1"]  # only missing
    assert sorted(run.skipped) == sorted(first.names) and not run.failed
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # finished cells untouched
    assert len(run.results) == 4

    res = run.results[2]  # ratio 1, seed 0: [gated_deltanet, attention]
    assert res["layers"] == ["gated_deltanet", "attention"]
    m = res["metrics"]
    assert m["attn_share"] == 0.5 and run.results[0]["metrics"]["attn_share"] == 1.0
    assert set(m) >= {"acc/L16_N2", "acc/L16_N4", "acc_mean", "wall_time_s", "params"}
    assert m["acc_mean"] == pytest.approx((m["acc/L16_N2"] + m["acc/L16_N4"]) / 2)
    assert m["params"] == param_count(res_cfg(tmp_path, res["cell"]))
    saved = json.loads((tmp_path / "cells" / res["cell"] / "run" / "config.json").read_text())
    assert saved["seed"] == 0 and saved["model"]["ratio"] == 1

    paths = write_report(run.results, axes, tmp_path)
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and rows[3]["model.ratio"] == "1" and rows[3]["seed"] == "1"
    assert float(rows[3]["acc_mean"]) == pytest.approx(run.results[3]["metrics"]["acc_mean"])
    md = paths["md"].read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 3  # header + one row per ratio (seeds aggregated)
    assert " ± " in table[1] and table[1].endswith("| 0,1 |")
    for name in ("acc_mean_vs_model_ratio", "vs_attention_share"):
        assert paths[name].suffix == ".png" and paths[name].stat().st_size > 1000


def res_cfg(out, cell):
    from memarch.ablate.cell import read_result
    from memarch.train.config import apply_overrides

    return apply_overrides(TINY, read_result(out / "cells" / cell)["overrides"])


def test_identical_cells_train_once_and_stale_results_are_refused(tmp_path):
    # ratio 0 means all attention whatever the linear mixer: 3 distinct models, not 4
    axes = parse_grid_args(["model.linear_mixer=gated_deltanet,gla", "model.ratio=0,1"])
    counting = CountingTrain()
    run = run_grid(TINY, axes, tmp_path, progress=False, train_fn=counting)
    assert len(counting.names) == 3 and len(run.results) == 4
    shared = [r for r in run.results if "shared_from" in r]
    assert [r["cell"] for r in shared] == ["model.linear_mixer=gla__model.ratio=0"]
    assert shared[0]["metrics"] == run.results[0]["metrics"]
    # the same out folder with another base config: refused before any training
    other = CountingTrain()
    changed = dataclasses.replace(TINY, num_steps=3)
    with pytest.raises(ValueError, match="different config"):
        run_grid(changed, axes, tmp_path, progress=False, train_fn=other)
    assert other.names == []


def test_a_failing_cell_is_reported_and_the_rest_still_run(tmp_path):
    def flaky(cfg, **kw):
        if cfg.name.startswith("model.ratio=1"):
            raise FloatingPointError("loss is nan")
        return train(cfg, **kw)

    run = run_grid(
        TINY, parse_grid_args(["model.ratio=1,0"]), tmp_path, progress=False, train_fn=flaky
    )
    assert list(run.failed) == ["model.ratio=1"] and "loss is nan" in run.failed["model.ratio=1"]
    assert [r["cell"] for r in run.results] == ["model.ratio=0"]


def test_a_failing_cell_reports_its_error_not_the_jax_note(tmp_path):
    """An error inside jitted code carries JAX's "removed its internal frames" note after its
    traceback; the cell's failure is the error's own message."""

    def broken(cfg, **kw):
        if cfg.name.startswith("model.ratio=1"):
            jax.jit(lambda x: x.reshape(3))(jnp.zeros(4))
        return train(cfg, **kw)

    said = []
    run = run_grid(
        TINY,
        parse_grid_args(["model.ratio=1,0"]),
        tmp_path,
        progress=False,
        train_fn=broken,
        log=said.append,
    )
    message = run.failed["model.ratio=1"]
    assert (
        message.startswith("TypeError: cannot reshape array") and "internal frames" not in message
    )
    assert any(line.startswith("model.ratio=1: FAILED: TypeError: cannot reshape") for line in said)


def test_cli_ablate_bad_cell_is_one_line_before_training(tmp_path, capsys):
    config = tmp_path / "tiny_config.py"
    config.write_text(CONFIG_SOURCE)
    out = tmp_path / "out"
    args = ["ablate", "--config", str(config), "--out", str(out), "--no-progress"]
    assert main([*args, "--grid", "model.mixers.attention.num_kv_heads=1,4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "num_kv_heads=4: model: ValueError: num_kv_heads (4)" in err[0]
    assert not (out / "cells").exists()


@pytest.mark.parametrize(
    "grid,match",
    [([], "grid is empty"), (["optim.lr=1e-3"], "unknown config key 'optim.lr'")],
)
def test_bad_input_raises_before_training(tmp_path, grid, match):
    counting = CountingTrain()
    with pytest.raises(ValueError, match=match):
        run_grid(TINY, parse_grid_args(grid), tmp_path, progress=False, train_fn=counting)
    assert counting.names == [] and not (tmp_path / "cells").exists()


def test_cli_ablate_in_two_worker_processes(tmp_path, capsys):
    config = tmp_path / "tiny_config.py"
    config.write_text(CONFIG_SOURCE)
    args = ["ablate", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*args, "--grid", "model.ratio=0,1", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 cells trained, 0 already done, 0 failed" in out and "| model.ratio |" in out
    assert len(list((tmp_path / "out").glob("cells/*/result.json"))) == 2
    # --report-only over a larger grid: nothing is trained, the finished cells are reported
    assert main([*args, "--grid", "model.ratio=0,1,2", "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "0 cells trained, 2 already done" in out
    assert len([line for line in out.splitlines() if line.startswith("| ")]) == 3
    assert not (tmp_path / "out" / "cells" / "model.ratio=2").exists()
    # bad input from the command line: one clear line, exit status 2, nothing trained
    assert main([*args, "--grid", "optim.learning_rat=1"]) == 2
    assert "did you mean 'optim.learning_rate'" in capsys.readouterr().err
    assert main(args) == 2
    assert "grid is empty" in capsys.readouterr().err


def test_a_config_field_added_later_at_its_default_keeps_finished_cells():
    """A cell saved before a config field existed still matches while the field holds its
    default; a changed value (saved or new) is reported by its dotted key."""
    from memarch.ablate.runner import _differences

    default = {"data": {"task": "mqar", "new_field": 0.5}, "seed": 0}
    saved = {"data": {"task": "mqar"}, "seed": 0}
    assert (
        _differences(saved, {"data": {"task": "mqar", "new_field": 0.5}, "seed": 0}, default) == []
    )
    assert _differences(
        saved, {"data": {"task": "mqar", "new_field": 0.9}, "seed": 0}, default
    ) == ["data.new_field"]
    assert _differences(
        saved, {"data": {"task": "text", "new_field": 0.5}, "seed": 1}, default
    ) == [
        "data.task",
        "seed",
    ]
