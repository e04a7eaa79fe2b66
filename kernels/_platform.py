"""Where a Pallas kernel runs and how it is lowered: shared by every kernel in this package.

Everything here depends on the *target*: the platform the kernel is compiled for, which is not
always the host's (a CPU host can compile for a TPU slice). :func:`backend` gives it, from
:mod:`memarch.kernels._target`: an explicit ``compile_target(...)``, else the device of the
current mesh (``jax.set_mesh``), else the mesh of the kernel's sharded inputs, else JAX's
default backend. Each kernel entry asks once, with its inputs, and passes the answer down to
:func:`resolve_interpret` and :func:`compiler_params`, so the forward and backward kernels of
one call agree.

Three execution modes, chosen per call by ``interpret``:

* ``None`` (default): compiled for a GPU/TPU target, interpreted for a CPU target (the only way
  Pallas runs there), so ``impl="pallas"`` works on a laptop and a researcher can step
  through the kernel, while the same call traced for a TPU topology compiles the kernel.
* ``True``: the generic interpreter on any backend.
* ``"tpu"``: the TPU-simulating interpreter (:func:`tpu_interpret_params`): uninitialised
  buffers are NaN and out-of-bounds reads raise, so an output block the kernel never writes
  fails a test instead of passing by luck.

Lowering paths. Every kernel is one ``pl.pallas_call`` with a grid and BlockSpecs; only the
``compiler_params`` differ by target platform (:func:`compiler_params`):

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

from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu_triton

from memarch.kernels import _target

Interpret = bool | Literal["tpu"] | None
INTERPRET_CHOICES = (None, True, False, "tpu")
COMPILED_PLATFORMS = ("gpu", "tpu")  # targets where ``interpret=None`` compiles the kernel


def backend(*arrays) -> str:
    """The target platform, ``"cpu"``, ``"gpu"`` or ``"tpu"``, for a kernel with inputs
    ``arrays`` (:func:`memarch.kernels._target.target_platform`; module docstring)."""
    return _target.target_platform(*arrays)


def tpu_interpret_params() -> pltpu.InterpretParams:
    """TPU-simulating interpreter with NaN-poisoned uninitialised memory and checked reads."""
    return pltpu.InterpretParams(uninitialized_memory="nan", out_of_bounds_reads="raise")


def resolve_interpret(interpret: Interpret, platform: str | None = None):
    """The ``interpret=`` value for ``pl.pallas_call`` (``False``, ``True`` or InterpretParams)
    on target ``platform`` (:func:`backend` when None): ``None`` compiles for a GPU/TPU target
    and interprets for a CPU one."""
    if interpret not in INTERPRET_CHOICES:
        raise ValueError(f"interpret must be one of {list(INTERPRET_CHOICES)}; got {interpret!r}")
    if interpret == "tpu":
        return tpu_interpret_params()
    if interpret is None:
        return (backend() if platform is None else platform) not in COMPILED_PLATFORMS
    return bool(interpret)


def compiler_params(
    dimension_semantics: Sequence[str],
    *,
    platform: str | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
):
    """``compiler_params`` for ``pl.pallas_call`` on target ``platform`` (:func:`backend` when
    None); None for a CPU target (interpreted).

    ``dimension_semantics`` names each grid axis ``"parallel"`` or ``"arbitrary"`` (an axis
    that carries state between steps, or accumulates into a revisited output block, must be
    ``"arbitrary"`` and last).
    """
    b = backend() if platform is None else platform
    if b == "tpu":
        return pltpu.CompilerParams(dimension_semantics=tuple(dimension_semantics))
    if b == "gpu":
        return plgpu_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)
    return None
