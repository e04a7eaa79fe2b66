"""fla checkpoints (fixtures made with fla 0.6.0's own classes, tests/convert/fixtures/fla/)
load into memarch with fla's logits and greedy tokens, and export back to fla's exact files.

Per fixture: logits on the recorded input within relative RMS 1e-4 (float32); 16 greedy tokens
through memarch's decode path equal fla's; the export's tensors (names, shapes, values) and
config equal what fla's ``save_pretrained`` wrote; importing the export gives bit-identical
parameters (HGRN2's lower bounds too, which fla stores as logits of a softmax over layers:
import settles them on a fixed point of that float32 round trip). Then the run-directory path end to end (``memarch convert`` both ways, the
lm-eval session on the imported run) on two fixtures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer, models, pre_tokenizers

from memarch.cli import main as cli_main
from memarch.convert import (
    fla_from_model,
    model_from_fla,
    model_params,
    read_fla_config,
    read_fla_tensors,
)
from memarch.convert.fla_config import HF_KEYS
from memarch.eval.lm_session import LMSession
from memarch.models.generate import generate
from memarch.testing import rel_rms
from memarch.train.run_dir import load_run_config

FIXTURES = Path(__file__).parent / "fixtures" / "fla"
NAMES = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").is_file())
FAMILIES = {"gla", "delta_net", "gated_deltanet", "hgrn2", "linear_attn", "mom", "transformer"}
LOWER_BOUNDS = "model.lower_bounds"  # fla keeps raw logits; only their softmax over layers counts


def test_every_family_and_two_hybrids_have_fixtures():
    types = {json.loads((FIXTURES / n / "config.json").read_text())["model_type"] for n in NAMES}
    assert types == FAMILIES
    hybrids = [
        n for n in NAMES if json.loads((FIXTURES / n / "config.json").read_text()).get("attn")
    ]
    windows = [
        n
        for n in hybrids
        if json.loads((FIXTURES / n / "config.json").read_text())["attn"].get("window_size")
    ]
    assert len(hybrids) >= 2 and windows


@pytest.fixture(scope="module", params=NAMES)
def loaded(request):
    """(name, fla config, fla tensors, memarch config, memarch model, reference arrays)."""
    src = FIXTURES / request.param
    config, tensors = read_fla_config(src), read_fla_tensors(src)
    cfg, model = model_from_fla(config, tensors)
    ref = dict(np.load(src / "reference.npz"))
    return request.param, config, tensors, cfg, model, ref


def test_logits_match_fla(loaded):
    name, _, _, _, model, ref = loaded
    logits, _ = model(jnp.asarray(ref["input_ids"]))
    err = float(rel_rms(logits, ref["logits"]))
    print(f"{name}: logits relative RMS error {err:.2e}")
    assert err <= 1e-4, f"{name}: logits relative RMS error {err:.2e} > 1e-4"


def test_greedy_generation_matches_fla(loaded):
    _, _, _, _, model, ref = loaded
    prompt = jnp.asarray(ref["greedy_prompt"])
    out = generate(model, prompt, max_new_tokens=ref["greedy_tokens"].shape[1])
    np.testing.assert_array_equal(np.asarray(out[:, prompt.shape[1] :]), ref["greedy_tokens"])


def _softmax0(a: np.ndarray) -> np.ndarray:
    e = np.exp(a.astype(np.float64) - a.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def test_export_writes_fla_tensors_and_config(loaded):
    name, config, tensors, cfg, model, _ = loaded
    out_config, out_tensors = fla_from_model(cfg, model, base=config)
    assert sorted(out_tensors) == sorted(tensors)
    for key, value in tensors.items():
        assert out_tensors[key].shape == value.shape, key
        assert out_tensors[key].dtype == np.float32, key
        if key == LOWER_BOUNDS:
            np.testing.assert_allclose(_softmax0(out_tensors[key]), _softmax0(value), atol=1e-6)
        else:
            np.testing.assert_array_equal(out_tensors[key], value, err_msg=f"{name}: {key}")
    want = {k: v for k, v in config.items() if k not in HF_KEYS or k == "model_type"}
    got = {k: out_config[k] for k in want if k in out_config}
    assert got == want
    assert out_config["architectures"] == config["architectures"]
    # without the imported config, fla's defaults fill the fields memarch has no use for
    plain, _ = fla_from_model(cfg, model)
    assert plain["model_type"] == config["model_type"]


def test_round_trip_parameters_bit_identical(loaded):
    _, _, _, cfg, model, _ = loaded
    config, tensors = fla_from_model(cfg, model)
    cfg2, model2 = model_from_fla(config, tensors)
    assert cfg2 == cfg
    a, b = model_params(model), model_params(model2)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _with_tokenizer(name: str, dst: Path) -> Path:
    """A copy of fixture ``name`` plus a 128-word tokenizer (tokenizer.json + special tokens)."""
    shutil.copytree(FIXTURES / name, dst)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(128)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(dst / "tokenizer.json"))
    (dst / "special_tokens_map.json").write_text('{"bos_token": "w1", "eos_token": "w2"}')
    return dst


@pytest.mark.parametrize("name", ["gated_deltanet_hybrid"])
def test_run_directory_round_trip_through_the_command_line(name, tmp_path):
    src = _with_tokenizer(name, tmp_path / "src")
    run, back = tmp_path / "run", tmp_path / "back"
    assert cli_main(["convert", "from-fla", str(src), str(run)]) == 0
    cfg = load_run_config(run)
    assert cfg.data.task == "text" and Path(cfg.data.tokenizer) == (run / "tokenizer").absolute()
    session = LMSession.from_run_dir(run)  # the lm-eval harness model
    ref = np.load(src / "reference.npz")
    logits, _ = session.model(jnp.asarray(ref["input_ids"]))
    assert float(rel_rms(logits, ref["logits"])) <= 1e-4
    assert session.tokenizer.encode("w5 w7") == [5, 7]
    # checkpoint 0 (parameters + fresh optimiser state) for `memarch train --resume`
    assert "checkpoint 0" in session.source
    assert (run / "params").is_dir()
    assert cli_main(["convert", "to-fla", str(run), str(back)]) == 0
    for f in ("config.json", "model.safetensors", "tokenizer.json", "special_tokens_map.json"):
        assert (back / f).is_file(), f
    a, b = load_file(src / "model.safetensors"), load_file(back / "model.safetensors")
    assert sorted(a) == sorted(b)
    assert all(np.array_equal(a[k], b[k]) for k in a if k != LOWER_BOUNDS)
    assert (
        json.loads((back / "config.json").read_text())["model_type"]
        == json.loads((src / "config.json").read_text())["model_type"]
    )
    # fine-tuning: `memarch train --config RUN --workdir RUN --resume` continues from checkpoint
    # 0 on a new corpus and schedule (no step ran under the imported run's schedule)
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(" ".join(f"w{i}" for i in rng.integers(3, 128, 40)) for _ in range(100))
    )
    train = ["train", "--config", str(run), "--workdir", str(run), "--resume", "--no-progress"]
    overrides = [f"data.text_file='{corpus}'", f"data.data_dir='{tmp_path / 'data'}'"]
    overrides += ["num_steps=1", "batch_size=2", "data.seq_len=32", "eval_every=0"]
    assert cli_main([*train, *overrides]) == 0
    assert (run / "checkpoints" / "1").is_dir()
    tuned = LMSession.from_run_dir(run)
    assert "checkpoint 1" in tuned.source
    assert float(rel_rms(tuned.model(jnp.asarray(ref["input_ids"]))[0], logits)) > 1e-6


def test_gla_unfused_norm_names_its_tensor_g_norm():
    """fla's GLA with ``fuse_norm=False`` keeps the gated output norm as ``g_norm``."""
    src = FIXTURES / "gla"
    config = {**read_fla_config(src), "fuse_norm": False}
    tensors = {
        k.replace("g_norm_swish_gate", "g_norm"): v for k, v in read_fla_tensors(src).items()
    }
    cfg, model = model_from_fla(config, tensors)
    out_config, out_tensors = fla_from_model(cfg, model, base=config)
    assert out_config["fuse_norm"] is False
    assert sorted(out_tensors) == sorted(tensors)
    ref = np.load(src / "reference.npz")
    assert float(rel_rms(model(jnp.asarray(ref["input_ids"]))[0], ref["logits"])) <= 1e-4
