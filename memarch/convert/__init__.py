"""Checkpoint conversion between memarch and other frameworks (``memarch convert``).

- :mod:`memarch.convert.fla`: flash-linear-attention (fla) checkpoints in Hugging Face format
  <-> memarch run directories (:func:`import_fla`, :func:`export_fla`); the config mapping is
  :mod:`memarch.convert.fla_config`, the tensor mapping :mod:`memarch.convert.fla_tensors`.
"""

from memarch.convert.fla import (
    ConvertError,
    export_fla,
    fla_from_model,
    import_fla,
    model_from_fla,
    model_params,
    read_fla_config,
    read_fla_tensors,
)

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
