"""Bad fla checkpoints and memarch models without an fla counterpart give one clear
``ConvertError`` naming the field, tensor or option (and write nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from memarch.convert import ConvertError, fla_from_model, import_fla, model_from_fla
from memarch.convert.fla_config import fla_config_from_lm, lm_config_from_fla
from memarch.models.lm import LM, LMConfig

FIXTURES = Path(__file__).parent / "fixtures" / "fla"
SRC = FIXTURES / "gated_deltanet_hybrid"


def _config(**changes) -> dict:
    config = json.loads((SRC / "config.json").read_text())
    config.update(changes)
    return config


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"model_type": "rwkv7"}, r"'model_type' = 'rwkv7' is not supported; supported families"),
        ({"use_fancy_thing": True}, r"unknown fields \['use_fancy_thing'\]"),
        ({"hidden_act": "gelu"}, r"'hidden_act' = 'gelu' is not supported"),
        ({"attnres_block_size": 2}, r"'attnres_block_size' = 2"),
        ({"output_gate_activation": "sigmoid"}, r"'output_gate_activation' = 'sigmoid'"),
        ({"num_v_heads": 3}, r"'num_v_heads' = 3"),
        ({"attn": {"layers": [1], "num_heads": 4, "sliding": 8}}, r"unknown keys \['sliding'\]"),
        ({"attn": {"layers": [9], "num_heads": 4}}, r"layer 9 is out of \[0, 4\)"),
    ],
)
def test_bad_config_fields_are_named(changes, match):
    with pytest.raises(ConvertError, match=match):
        lm_config_from_fla(_config(**changes))


@pytest.mark.parametrize(
    "model_type,changes,match",
    [
        ("gla", {"feature_map": "relu"}, "'feature_map' = 'relu'"),
        ("gla", {"num_kv_heads": 1}, "'num_kv_heads' = 1"),
        ("delta_net", {"qk_norm": "sum"}, "'qk_norm' = 'sum'"),
        ("linear_attn", {"feature_map": "hedgehog"}, "'feature_map' = 'hedgehog'"),
        ("mom", {"single_kv_proj": True}, "'single_kv_proj' = True"),
    ],
)
def test_unsupported_family_values(model_type, changes, match):
    base = {"model_type": model_type, "hidden_size": 32, "num_heads": 2, "vocab_size": 64}
    with pytest.raises(ConvertError, match=match):
        lm_config_from_fla({**base, **changes})


@pytest.fixture(scope="module")
def tensors():
    return load_file(SRC / "model.safetensors")


def _write(tmp_path: Path, tensors: dict) -> Path:
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src


def test_missing_tensor(tmp_path, tensors):
    broken = {k: v for k, v in tensors.items() if k != "model.layers.2.attn.a_proj.weight"}
    with pytest.raises(
        ConvertError, match=r"lacks tensors \['model.layers.2.attn.a_proj.weight'\]"
    ):
        import_fla(_write(tmp_path, broken), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extra_tensor(tmp_path, tensors):
    broken = {**tensors, "model.layers.0.attn.surprise": np.zeros(3, np.float32)}
    with pytest.raises(ConvertError, match=r"does not use: \['model.layers.0.attn.surprise'\]"):
        import_fla(_write(tmp_path, broken), tmp_path / "out")


def test_shape_mismatch(tmp_path, tensors):
    key = "model.layers.1.attn.q_proj.weight"
    broken = {**tensors, key: np.zeros((8, 32), np.float32)}
    with pytest.raises(
        ConvertError, match=r"model.layers.1.attn.q_proj.weight \[\(8, 32\)\] gives"
    ):
        import_fla(_write(tmp_path, broken), tmp_path / "out")


def test_sharded_checkpoint_loads(tmp_path, tensors):
    """Shards listed by model.safetensors.index.json load like one file."""
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    (src / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}  # fmt: skip
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(src / file), metadata={"format": "pt"})
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    cfg = import_fla(src, tmp_path / "out")
    assert cfg.model.layer_names() == ["gated_deltanet", "attention"] * 2


@pytest.mark.parametrize(
    "lm,match",
    [
        (
            LMConfig(pattern="AT", d_model=16, num_heads=2, vocab_size=32),
            r"'titans_lmm' \(layer 1\) has no fla counterpart",
        ),
        (
            LMConfig(pattern="K", d_model=16, num_heads=2, vocab_size=32),
            r"'trimkv' \(layer 0\) has no fla counterpart",
        ),
        (LMConfig(pattern="RD", d_model=16, num_heads=2, vocab_size=32), "mixes"),
        (
            LMConfig(
                pattern="R",
                d_model=16,
                num_heads=2,
                vocab_size=32,
                mixers={"gla": {"conv_bias": True}},
            ),
            "option conv_bias = True has no fla counterpart",
        ),
        (
            LMConfig(
                pattern="R",
                d_model=16,
                num_heads=2,
                vocab_size=32,
                mixers={"gla": {"gate_rank": 8}},
            ),
            "option gate_rank = 8 has no fla counterpart",
        ),
        (LMConfig(pattern="A", d_model=16, num_heads=2, vocab_size=32, mlp_hidden=0), "no MLP"),
    ],
)
def test_export_refuses_models_without_an_fla_counterpart(lm, match):
    with pytest.raises(ConvertError, match=match):
        fla_config_from_lm(lm)


def test_export_of_a_memarch_model_with_an_fla_counterpart_reimports_equal():
    """A model trained in memarch (not imported) with fla's GLA options exports and imports
    back to the same function."""
    lm = LMConfig(
        pattern="RAR",
        d_model=16,
        num_heads=2,
        vocab_size=32,
        mlp_hidden=24,
        norm_eps=1e-6,
        mixers={"gla": {"head_dim": 4, "expand_v": 2.0, "short_conv": 0}},
        layers={1: {"window": 4}},
    )
    model = LM(lm, rngs=nnx.Rngs(0))
    config, tensors = fla_from_model(lm, model)
    assert config["attn"]["window_size"] == 4 and config["expand_k"] == 0.5
    _, back = model_from_fla(config, tensors)
    x = np.arange(12, dtype=np.int32).reshape(2, 6) % 32
    np.testing.assert_array_equal(np.asarray(back(x)[0]), np.asarray(model(x)[0]))
