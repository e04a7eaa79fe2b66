"""The base of the synthetic tasks' random-access sources (grain ``RandomAccessDataSource``).

A source holds one task slice (a config with ``seq_len`` and ``validate()``), a seed and a
number of examples; ``src[i]`` is ``{"inputs": int32[Lp], "targets": int32[Lp]}``, a pure
function of ``(seed, i)``, right-padded to ``Lp = pad_to or seq_len`` with 0 in inputs and
``IGNORE_INDEX`` in targets (so slices of different lengths batch together). A task subclasses
:class:`SyntheticSource` and defines :meth:`SyntheticSource.example`.
"""

from __future__ import annotations

import operator
from numbers import Integral
from typing import Any

import numpy as np

IGNORE_INDEX = -100  # target of every unlabelled position (skipped by the loss and the metric)


def check_seed(seed: int) -> None:
    """Raises ``ValueError`` unless ``seed`` is an int ≥ 0."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")


class SyntheticSource:
    """Random-access examples of one task slice; see the module docstring."""

    task = "synthetic"  # name used in index errors

    def __init__(self, config: Any, *, seed: int, num_examples: int, pad_to: int | None = None):
        config.validate()
        check_seed(seed)
        if isinstance(num_examples, bool) or not isinstance(num_examples, Integral):
            raise ValueError(f"num_examples must be an int >= 1; got {num_examples!r}")
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1; got {num_examples}")
        if pad_to is not None and (
            isinstance(pad_to, bool) or not isinstance(pad_to, Integral) or pad_to < config.seq_len
        ):
            raise ValueError(
                f"pad_to must be None or an int >= seq_len={config.seq_len}; got {pad_to!r}"
            )
        self.config = config
        self.seed = int(seed)
        self.num_examples = int(num_examples)
        self.pad_to = config.seq_len if pad_to is None else int(pad_to)

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Unpadded example ``index`` (valid, ≥ 0) as ``(inputs int32[L], targets int32[L])``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = operator.index(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"{self.task} index must be in [0, {self.num_examples}); got {index}")
        inputs, targets = self.example(index)
        extra = self.pad_to - self.config.seq_len
        if extra:
            inputs = np.pad(inputs, (0, extra), constant_values=0)
            targets = np.pad(targets, (0, extra), constant_values=IGNORE_INDEX)
        return {"inputs": inputs, "targets": targets}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.config}, seed={self.seed}, "
            f"num_examples={self.num_examples}, pad_to={self.pad_to})"
        )
