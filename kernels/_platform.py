"""Where a Pallas kernel runs and how it is lowered: shared by every kernel in this package.

Three execution modes, chosen per call by ``interpret``:

* ``None`` (default): compiled on GPU/TPU, interpreted on CPU (the only way Pallas runs there),
  so ``impl="pallas"`` works on a laptop and a researcher can step through the kernel.
* ``True``: the generic interpreter on any backend.
* ``"tpu"``: the TPU-simulating interpreter (:func:`tpu_interpret_params`): uninitialised
  buffers are NaN and out-of-bounds reads raise, so an output block the kernel never writes
  fails a test instead of passing by luck.

Lowering paths. Every kernel is one ``pl.pallas_call`` with a grid and BlockSpecs; only the
``compiler_params`` differ by backend (:func:`compiler_params`):

* TPU: Mosaic TPU, ``pltpu.CompilerParams(dimension_semantics=...)``; the sequential chunk axis
  is ``"arbitrary"`` (it carries the state in VMEM scratch), batch and head axes ``"parallel"``.
* GPU: the Triton lowering of ``pallas_call`` (``plgpu_triton.CompilerParams(num_warps,
  num_stages)``). jax 0.11.2 marks it deprecated in favour of Mosaic GPU, but it is the lowering
  that shares the grid/BlockSpec kernel body with the TPU path and runs on any CUDA GPU;
  Mosaic GPU (``plgpu.kernel`` with warp-group semantics and TMA pipelines) needs a separate,
  Hopper-only kernel body, which is future work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu_triton

Interpret = bool | Literal["tpu"] | None
INTERPRET_CHOICES = (None, True, False, "tpu")


def backend() -> str:
    """The default JAX backend: ``"cpu"``, ``"gpu"`` or ``"tpu"``."""
    return jax.default_backend()


def tpu_interpret_params() -> pltpu.InterpretParams:
    """TPU-simulating interpreter with NaN-poisoned uninitialised memory and checked reads."""
    return pltpu.InterpretParams(uninitialized_memory="nan", out_of_bounds_reads="raise")


def resolve_interpret(interpret: Interpret):
    """The ``interpret=`` value for ``pl.pallas_call`` (``False``, ``True`` or InterpretParams)."""
    if interpret not in INTERPRET_CHOICES:
        raise ValueError(f"interpret must be one of {list(INTERPRET_CHOICES)}; got {interpret!r}")
    if interpret == "tpu":
        return tpu_interpret_params()
    if interpret is None:
        return backend() not in ("gpu", "tpu")
    return bool(interpret)


def compiler_params(dimension_semantics: Sequence[str], *, num_warps: int = 4, num_stages: int = 2):
    """Backend-specific ``compiler_params`` for ``pl.pallas_call`` (None where not compiled).

    ``dimension_semantics`` names each grid axis ``"parallel"`` or ``"arbitrary"`` (an axis
    that carries state between steps, or accumulates into a revisited output block, must be
    ``"arbitrary"`` and last).
    """
    b = backend()
    if b == "tpu":
        return pltpu.CompilerParams(dimension_semantics=tuple(dimension_semantics))
    if b == "gpu":
        return plgpu_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)
    return None
