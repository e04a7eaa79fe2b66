"""Ablation grids: parsing, cartesian product, cell names, and bad input before training."""

import dataclasses

import pytest

from memarch.ablate.grid import (
    axis_from_values,
    cells,
    load_grid_file,
    parse_grid_args,
    resolve_cells,
)
from memarch.models import LMConfig
from memarch.train.config import DataConfig, TrainConfig

BASE = TrainConfig(
    name="tiny",
    model=LMConfig(vocab_size=32, d_model=16, num_heads=2, pattern="AA", mlp_hidden=0),
    data=DataConfig(vocab_size=32, train_slices=((16, 2),), eval_slices=((16, 2),)),
)


def test_cli_values_are_literals_or_strings():
    (ratio,) = parse_grid_args(["model.ratio=7,3,1"])
    assert [v.label for v in ratio.values] == ["7", "3", "1"]
    assert ratio.values[0].overrides == ("model.ratio=7",)
    (pat,) = parse_grid_args(["model.pattern=GGGA,GGAA"])
    assert [v.overrides for v in pat.values] == [
        ("model.pattern='GGGA'",),
        ("model.pattern='GGAA'",),
    ]
    (lr,) = parse_grid_args(["optim.learning_rate=1e-3, 3e-3"])
    assert [v.label for v in lr.values] == ["0.001", "0.003"]
    # a value holding a comma is written as a literal
    (names,) = parse_grid_args(["model.pattern='gla,attention','gla,gla'"])
    assert [v.label for v in names.values] == ["gla,attention", "gla,gla"]
    (slices,) = parse_grid_args(["data.eval_slices=((16, 2),), ((16, 4), (32, 4))"])
    assert slices.values[1].overrides == ("data.eval_slices=((16, 4), (32, 4))",)


def test_seed_axis_sets_model_and_data_seed():
    (seed,) = parse_grid_args(["seed=0,1"])
    assert seed.values[1].overrides == ("seed=1", "data.seed=1")
    ((_, cfg),) = resolve_cells(BASE, [axis_from_values("seed", [3])], num_devices=1)
    assert cfg.seed == 3 and cfg.data.seed == 3


def test_cartesian_product_in_axis_order_with_distinct_names():
    axes = parse_grid_args(["model.ratio=0,1", "seed=0,1,2"])
    grid = cells(axes)
    assert len(grid) == 6
    assert [c.labels for c in grid[:2]] == [
        {"model.ratio": "0", "seed": "0"},
        {"model.ratio": "0", "seed": "1"},
    ]
    assert grid[0].name == "model.ratio=0__seed=0"
    assert grid[0].overrides == ("model.ratio=0", "seed=0", "data.seed=0")
    assert len({c.name for c in grid}) == 6
    # names are deterministic, and labels that sanitise alike still get distinct names
    assert [c.name for c in cells(axes)] == [c.name for c in grid]
    odd = cells([axis_from_values("r", {"7:1": {"seed": 1}, "7_1": {"seed": 2}})])
    assert len({c.name for c in odd}) == 2 and all("/" not in c.name for c in odd)


def test_bundle_axis_and_grid_file(tmp_path):
    path = tmp_path / "grid.py"
    path.write_text(
        "GRID = {\n"
        "    'arch': {'hybrid': {'model.pattern': 'GA'}, 'attention': {'model.pattern': 'AA'}},\n"
        "    'optim.learning_rate': [1e-3, 1e-2],\n"
        "}\n"
    )
    axes = load_grid_file(path)
    resolved = resolve_cells(BASE, axes, num_devices=1)
    assert len(resolved) == 4
    cell, cfg = resolved[1]
    assert cell.labels == {"arch": "hybrid", "optim.learning_rate": "0.01"}
    assert cfg.model.pattern == "GA" and cfg.optim.learning_rate == 0.01
    assert cfg.name == cell.name


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: cells([]), "grid is empty"),
        (lambda: parse_grid_args(["model.ratio="]), "no values"),
        (lambda: parse_grid_args(["model.ratio"]), "key.sub=v1,v2"),
        (lambda: axis_from_values("x", []), "has no values"),
        (lambda: axis_from_values("x", [1, 1]), "repeats a value"),
        (lambda: axis_from_values("x", {"a": {}}), "non-empty dict"),
        (lambda: cells(parse_grid_args(["seed=0", "seed=1"])), "repeated"),
    ],
)
def test_malformed_grids(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "grid,match",
    [
        (["optim.learning_rat=1e-3"], "did you mean 'optim.learning_rate'"),
        (["model.pattern=AX"], "unknown letters"),
        (["batch_size=0"], "batch_size must be an int"),
        (["data.train_slices=((16, 9),)"], "grid cell seed=0__data.train_slices.*seq_len"),
    ],
)
def test_bad_cells_raise_naming_the_cell(grid, match):
    with pytest.raises(ValueError, match=match):
        resolve_cells(BASE, parse_grid_args(["seed=0,1", *grid]), num_devices=1)


def test_missing_grid_file_and_missing_text_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_grid_file(tmp_path / "nope.py")
    (tmp_path / "g.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match="must define GRID"):
        load_grid_file(tmp_path / "g.py")
    text = dataclasses.replace(BASE, data=dataclasses.replace(BASE.data, vocab_size=258))
    text = dataclasses.replace(text, model=dataclasses.replace(text.model, vocab_size=258))
    axes = [axis_from_values("data.task", ["text"])]
    with pytest.raises(ValueError, match="text_file"):
        resolve_cells(text, axes, num_devices=1)


def test_every_cell_model_is_built_abstractly_before_any_training():
    """Options valid field by field that the mixer refuses with the model's sizes (4 kv heads
    for 2 heads) fail in resolve_cells, naming the cell and the mixer's own message."""
    axes = parse_grid_args(["model.mixers.attention.num_kv_heads=1,4"])
    with pytest.raises(
        ValueError,
        match=r"grid cell model\.mixers\.attention\.num_kv_heads=4: model: ValueError: "
        r"num_kv_heads \(4\) must divide num_heads \(2\)",
    ):
        resolve_cells(BASE, axes, num_devices=1)
    good = [axis_from_values("model.mixers.attention.num_kv_heads", [1, 2])]
    assert len(resolve_cells(BASE, good, num_devices=1)) == 2


def test_a_grid_file_that_raises_is_named_with_its_line(tmp_path):
    path = tmp_path / "g.py"
    path.write_text("import math\n\nGRID = {'seed': [math.nope]}\n")
    with pytest.raises(ValueError, match=rf"{path}, line 3: AttributeError: .*'nope'"):
        load_grid_file(path)
