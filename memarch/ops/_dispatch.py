"""The implementation vocabulary of every op and the one rule that picks an implementation.

Every op (and every mixer config that names one) accepts ``impl`` from :data:`IMPLS`:

* ``"naive"``: the specification (a float32 ``lax.scan`` over tokens, or the materialised
  ``T × T`` logits for decay attention);
* ``"chunk"``: the chunked (blockwise) XLA form;
* ``"pallas"``: the Pallas kernels of :mod:`memarch.kernels` (compiled on GPU/TPU, interpreted
  on CPU); an op whose kernel does not pack sequences falls back to ``"chunk"`` with
  ``segment_ids``;
* ``"auto"``: ``"pallas"`` on the backends in :data:`AUTO_PALLAS_BACKENDS` when the kernel
  applies (a chunk size it takes, and no ``segment_ids`` unless it packs them), else ``"chunk"``.

An op with no Pallas form refuses ``"pallas"`` through :func:`check_impl` with
:data:`IMPLS_NO_PALLAS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import jax

from memarch.kernels import _checks, _platform

IMPLS = ("naive", "chunk", "pallas", "auto")
IMPLS_NO_PALLAS = ("naive", "chunk", "auto")  # for an op without a Pallas kernel
# Backends where ``impl="auto"`` picks the Pallas kernels (and the XLA form everywhere else).
# The GPU entry follows the kernels' design target; the timings that confirm it on H100 are
# pending (experiments/bench_kernels.py), so remove "gpu" here if they show otherwise.
AUTO_PALLAS_BACKENDS = ("tpu", "gpu")


class ChunkKernel(Protocol):
    """What a kernel module states about itself (each of ``memarch.kernels.{gla, delta_rule,
    flash_attention}`` is one): the chunk sizes it takes and whether it packs sequences."""

    CHUNK_RULE: str  # the accepted chunk sizes, in words
    PACKS_SEGMENTS: bool  # whether it takes ``segment_ids``

    def supports_chunk_size(self, chunk_size: int) -> bool: ...


def check_impl(impl: str, accepted: Sequence[str] = IMPLS, *, what: str = "impl") -> None:
    """Raises ValueError naming the field ``what`` and the accepted values unless ``impl`` is
    one; ``"pallas"`` outside ``accepted`` is reported as an op without a Pallas form."""
    if impl not in accepted:
        note = " (no Pallas form here)" if impl == "pallas" else ""
        raise ValueError(f"{what} must be one of {list(accepted)}{note}; got {impl!r}")


def resolve_impl(
    impl: str,
    kernel: ChunkKernel,
    *,
    chunk_size: int,
    segment_ids: jax.Array | None,
    x: jax.Array | None = None,
) -> str:
    """The implementation that runs: ``"naive"``, ``"chunk"`` or ``"pallas"``.

    ``"naive"`` and ``"chunk"`` run as given. ``"pallas"`` raises ValueError for a chunk size
    the kernel does not take and falls back to ``"chunk"`` with ``segment_ids`` when the kernel
    does not pack sequences. ``"auto"`` is ``"pallas"`` where that would run unchanged on a
    backend in :data:`AUTO_PALLAS_BACKENDS`, ``"chunk"`` otherwise; the backend is the target the
    call compiles for (``memarch.kernels`` target rules: an explicit target, the current mesh, or
    the sharding of the op's input ``x``). ``chunk_size`` is assumed
    to be a positive int (the op checks that once); the kernel's own rule is checked here.
    """
    check_impl(impl)
    if impl in ("naive", "chunk"):
        return impl
    kernel_takes_segments = segment_ids is None or kernel.PACKS_SEGMENTS
    if impl == "pallas":
        _checks.check_chunk_size(chunk_size, kernel.supports_chunk_size, kernel.CHUNK_RULE)
        return "pallas" if kernel_takes_segments else "chunk"
    on_device = _platform.backend(*([] if x is None else [x])) in AUTO_PALLAS_BACKENDS
    applies = kernel_takes_segments and kernel.supports_chunk_size(chunk_size)
    return "pallas" if on_device and applies else "chunk"
