import dataclasses

import jax
import pytest
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

from memarch.train.config import MeshConfig, TrainConfig, apply_overrides
from memarch.train.mesh import compute_shardings, logical_axes, mesh_shape, partition_spec
from memarch.train.validation import validate

SIZES = {"data": 2, "fsdp": 2, "tensor": 2}


@pytest.mark.parametrize(
    "cfg,n,want",
    [
        (MeshConfig(), 8, {"data": 8, "fsdp": 1, "tensor": 1}),
        (MeshConfig(data=2, fsdp=2, tensor=2), 8, {"data": 2, "fsdp": 2, "tensor": 2}),
        (MeshConfig(data=1, fsdp=-1, tensor=2), 8, {"data": 1, "fsdp": 4, "tensor": 2}),
        (MeshConfig(), 1, {"data": 1, "fsdp": 1, "tensor": 1}),
    ],
)
def test_mesh_shape_resolves_the_rest(cfg, n, want):
    assert mesh_shape(cfg, n) == want


@pytest.mark.parametrize(
    "cfg,n,match",
    [
        (MeshConfig(data=3), 8, "need a multiple of 3 devices; there are 8"),
        (MeshConfig(data=2, fsdp=2, tensor=1), 8, "must equal the device count 8"),
        (MeshConfig(data=-1, fsdp=-1), 8, "at most one"),
        (MeshConfig(tensor=0), 8, "mesh.tensor must be a positive int or -1"),
    ],
)
def test_bad_mesh_sizes(cfg, n, match):
    with pytest.raises(ValueError, match=match):
        mesh_shape(cfg, n)


@pytest.mark.parametrize(
    "path,shape,spec",
    [
        ("embed/embedding", (64, 32), P("tensor", "fsdp")),
        ("blocks/1/mixer/q_proj/kernel", (32, 32), P("fsdp", "tensor")),
        ("blocks/1/mixer/o_proj/kernel", (32, 32), P("tensor", "fsdp")),
        ("blocks/0/mlp/down/kernel", (64, 32), P("tensor", "fsdp")),
        ("blocks/0/mlp/up/kernel", (32, 64), P("fsdp", "tensor")),
        ("blocks/0/mixer/conv/weight", (4, 96), P(None, "tensor")),
        ("blocks/2/mixer/k_proj", (4, 32, 32), P(None, "fsdp", "tensor")),
        ("blocks/0/mixer_norm/scale", (32,), P(None)),
        ("blocks/0/mixer/a_proj/kernel", (32, 3), P("fsdp", None)),  # 3 heads: replicated
        # Adam's moments live under the parameter's path
        ("1/0/mu/blocks/1/mixer/q_proj/kernel", (32, 32), P("fsdp", "tensor")),
        ("1/0/count", (), P()),
    ],
)
def test_partition_specs_from_logical_rules(path, shape, spec):
    assert partition_spec(MeshConfig(), SIZES, path, shape) == spec


def test_rules_are_config():
    cfg = MeshConfig(rules=(("batch", "data"), ("embed", None), ("heads", "fsdp")))
    assert logical_axes(cfg, "x/q_proj/kernel", 2) == ("embed", "heads")
    with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
        partition_spec(dataclasses.replace(cfg, rules=(("heads", "model"),)), SIZES, "q", (4, 4))


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["mesh.data=3"], "need a multiple of 3 devices; there are 8"),
        (["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "batch_size=6"], "data-parallel size 4"),
        (["batch_size=16", "grad_accum_steps=3"], "divisible by grad_accum_steps"),
        (["compute_dtype='float16'"], r"compute_dtype must be one of \['float32', 'bfloat16'\]"),
        (["on_nonfinite='ignore'"], "on_nonfinite must be one of"),
        (["mesh.param_axes=[('*', ('embed', 'model'))]"], "logical axis 'model'"),
    ],
)
def test_config_errors_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        validate(apply_overrides(TrainConfig(batch_size=16), overrides), 8)


def test_config_errors_fail_before_compilation(monkeypatch):
    import memarch.train.setup as train_setup
    import memarch.train.trainer as trainer

    def compiled(*a, **k):
        raise AssertionError("got as far as building the mesh / compiling")

    monkeypatch.setattr(trainer, "make_mesh", compiled)
    monkeypatch.setattr(train_setup, "make_train_step", compiled)
    for overrides, match in [
        (["mesh.data=2"], "need a multiple of 2 devices; there are 1"),
        (["data.train_slices=[(16, 9)]"], "vocab_size"),
    ]:
        cfg = apply_overrides(TrainConfig(batch_size=4, data=TrainConfig().data), overrides)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, vocab_size=16))
        with pytest.raises(ValueError, match=match):
            trainer.train(cfg)


@pytest.mark.parametrize(
    "rules,spec,want",
    [
        (None, P("fsdp", "tensor"), P(None, "tensor")),  # an input projection [D, H·d]
        (None, P("tensor", "fsdp"), P("tensor", None)),  # an output projection [H·d, D]
        (None, P(("data", "fsdp"), None), P(None, None)),
        (None, P(None, ("fsdp", "tensor")), P(None, "tensor")),
        ((("batch", "data"),), P("fsdp", "tensor"), P("fsdp", "tensor")),  # fsdp not a batch axis
    ],
)
def test_compute_shardings_gather_weights_over_the_batch_axes(rules, spec, want):
    cfg = MeshConfig() if rules is None else MeshConfig(rules=rules)
    mesh = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
    got = compute_shardings(cfg, {"w": NamedSharding(mesh, spec)})
    assert got["w"].spec == want and got["w"].mesh == mesh
    assert jax.tree.structure(got) == jax.tree.structure({"w": 0})
