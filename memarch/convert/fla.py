"""Import an fla checkpoint into a memarch run directory, and export one back.

:func:`import_fla` reads an fla (flash-linear-attention) checkpoint in Hugging Face format —
``config.json`` plus ``model.safetensors`` or shards listed by ``model.safetensors.index.json``,
read with ``safetensors.numpy`` (no torch) — builds the matching memarch
:class:`~memarch.models.lm.LMConfig` (:mod:`memarch.convert.fla_config`), maps every tensor
(:mod:`memarch.convert.fla_tensors`) and writes a run directory as ``memarch train`` does:
``config.json`` (a :class:`~memarch.train.config.TrainConfig` with task ``text``) and
``params/`` (orbax), which ``memarch eval``, :func:`memarch.models.generate.generate`,
:meth:`memarch.eval.lm_session.LMSession.from_run_dir` and a fine-tuning run starting from
these parameters read. Tokenizer files present (``tokenizer.json``, ``tokenizer.model``, ...)
are copied to ``tokenizer/`` and named by ``data.tokenizer``. The source ``config.json`` is kept
as ``fla_config.json`` (and ``generation_config.json`` when given), so an export writes back
the fields memarch has no use for (``bos_token_id``, ``max_position_embeddings``, ...).

:func:`export_fla` writes ``config.json`` (fla's ``model_type`` and ``architectures``) and
``model.safetensors`` (torch layout, fla's tensor names, metadata ``format = pt`` as
``save_pretrained`` writes) that fla's ``AutoModelForCausalLM.from_pretrained`` loads.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from memarch.convert.fla_config import ConvertError, fla_config_from_lm, lm_config_from_fla
from memarch.convert.fla_tensors import fla_to_memarch, memarch_to_fla
from memarch.data.config import DataConfig
from memarch.models.lm import LM, LMConfig
from memarch.train.checkpoint import Checkpointer
from memarch.train.config import TrainConfig
from memarch.train.run_dir import (
    CHECKPOINTS_DIR,
    PARAMS_DIR,
    load_run,
    save_params,
    write_run_config,
)
from memarch.train.setup import make_setup
from memarch.train.step import init_state

FLA_CONFIG_FILE = "fla_config.json"  # the imported checkpoint's config.json, kept for export
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)
GENERATION_CONFIG = "generation_config.json"
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"


def read_fla_config(src: str | Path) -> dict[str, Any]:
    """``src/config.json`` as a dict (``ConvertError`` when absent or not JSON)."""
    path = Path(src) / "config.json"
    if not path.is_file():
        raise ConvertError(f"{src}: no config.json (an fla checkpoint directory holds one)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path}: not valid JSON ({e})") from None


def read_fla_tensors(src: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint in ``src`` (one ``model.safetensors`` or the shards of
    ``model.safetensors.index.json``), as float32 numpy arrays; a name in two shards is an
    error."""
    src = Path(src)
    index = src / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted(set(weight_map.values()))
    elif (src / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise ConvertError(f"{src}: no {WEIGHTS_FILE} and no {INDEX_FILE}")
    out: dict[str, np.ndarray] = {}
    for name in files:
        path = src / name
        if not path.is_file():
            raise ConvertError(f"{src}: shard {name} listed in {INDEX_FILE} is missing")
        for key, value in load_file(path).items():
            if key in out:
                raise ConvertError(f"{src}: tensor {key} appears in two shards")
            out[key] = np.asarray(value, dtype=np.float32)
    return out


def _flat_params(model: nnx.Module) -> dict[str, Any]:
    """``{"a/b/c": variable}`` of the model's ``nnx.Param`` leaves."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(str(k) for k in path): var for path, var in flat}


def model_from_fla(
    config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]
) -> tuple[LMConfig, LM]:
    """(memarch config, memarch model with the checkpoint's parameters)."""
    cfg = lm_config_from_fla(config)
    model = LM(cfg, rngs=nnx.Rngs(0))
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    shapes = {"/".join(str(k) for k in p): tuple(v.get_value().shape) for p, v in flat}
    values = fla_to_memarch(cfg, tensors, shapes, bool(config.get("fuse_norm", True)))
    new = [(p, v.replace(jax.numpy.asarray(values["/".join(str(k) for k in p)]))) for p, v in flat]
    nnx.update(model, nnx.from_flat_state(new))
    return cfg, model


def model_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """``{"a/b/c": numpy array}`` of the model's parameters."""
    return {k: np.asarray(v.get_value()) for k, v in _flat_params(model).items()}


def _copy_tokenizer(src: Path, out: Path) -> Path | None:
    """Copies the tokenizer files of ``src`` to ``out/tokenizer``; returns that directory if a
    loadable tokenizer (``tokenizer.json`` or ``tokenizer.model``) was among them."""
    found = [n for n in TOKENIZER_FILES if (src / n).is_file()]
    if not found:
        return None
    dst = out / TOKENIZER_DIR
    dst.mkdir(parents=True, exist_ok=True)
    for name in found:
        shutil.copy2(src / name, dst / name)
    loadable = any(n in found for n in ("tokenizer.json", "tokenizer.model"))
    return dst.absolute() if loadable else None


def write_start_checkpoint(train: TrainConfig, model: nnx.Module, directory: Path) -> None:
    """Writes checkpoint 0 of run config ``train``: the model's parameters with a fresh
    optimiser state (as ``memarch train`` would save before its first step), so that
    ``memarch train --workdir OUT --resume`` with a config of this model fine-tunes from the
    imported weights."""
    state = init_state(model, make_setup(train).tx, train.seed)
    meta = {
        "step": 0,
        "config": dataclasses.asdict(train),
        "data": {"kind": "random_access", "next_step": 0},
    }
    ckpt = Checkpointer(directory, train.checkpoint)
    try:
        ckpt.save(0, state, meta)
        ckpt.wait()
    finally:
        ckpt.close()


def import_fla(
    src: str | Path, out: str | Path, *, name: str | None = None, train_state: bool = True
) -> TrainConfig:
    """Converts the fla checkpoint in ``src`` into a memarch run directory ``out``; returns
    the run's config. ``ConvertError`` names an unsupported field, a missing / unused tensor or
    a shape mismatch (nothing is written then). ``train_state``: also write checkpoint 0 (the
    parameters and a fresh optimiser state) for fine-tuning with ``memarch train --resume``."""
    src, out = Path(src), Path(out)
    config = read_fla_config(src)
    cfg, model = model_from_fla(config, read_fla_tensors(src))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _copy_tokenizer(src, out)
    data = DataConfig(
        task="text",
        vocab_size=cfg.vocab_size,
        tokenizer=str(tokenizer) if tokenizer is not None else "byte",
        seq_len=int(config.get("max_position_embeddings") or 2048),
    )
    train = TrainConfig(name=name or src.name, model=cfg, data=data)
    write_run_config(out, train)
    save_params(model, out / PARAMS_DIR)
    if train_state:
        write_start_checkpoint(train, model, out / CHECKPOINTS_DIR)
    (out / FLA_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if (src / GENERATION_CONFIG).is_file():
        shutil.copy2(src / GENERATION_CONFIG, out / GENERATION_CONFIG)
    return train


def fla_from_model(
    cfg: LMConfig, model: nnx.Module, base: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(fla config.json dict, fla tensors) of a memarch model; ``ConvertError`` when the model
    has no fla counterpart."""
    config = fla_config_from_lm(cfg, base)
    tensors = memarch_to_fla(cfg, model_params(model), bool(config.get("fuse_norm", True)))
    config["dtype"] = "float32"
    return config, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}


def export_fla(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Writes the model of memarch run ``run_dir`` as an fla checkpoint in ``out``; returns
    its config. ``ConvertError`` (nothing written) for a model with no fla counterpart."""
    run, out = Path(run_dir), Path(out)
    train, model = load_run(run)
    base_file = run / FLA_CONFIG_FILE
    base = json.loads(base_file.read_text()) if base_file.is_file() else None
    config, tensors = fla_from_model(train.model, model, base)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    if (run / GENERATION_CONFIG).is_file():
        shutil.copy2(run / GENERATION_CONFIG, out / GENERATION_CONFIG)
    tok = Path(train.data.tokenizer)
    if train.data.tokenizer != "byte" and tok.is_dir():
        for name in TOKENIZER_FILES:
            if (tok / name).is_file():
                shutil.copy2(tok / name, out / name)
    return config


__all__ = [
    "ConvertError",
    "export_fla",
    "fla_from_model",
    "import_fla",
    "model_from_fla",
    "model_params",
    "read_fla_config",
    "read_fla_tensors",
]
