"""The protocol every sequence mixer implements.

A mixer maps ``x [B, T, D]`` to ``y [B, T, D]``:

- ``y, cache = mixer(x, cache=None, segment_ids=None)`` trains or evaluates a whole sequence.
  ``segment_ids [B, T]`` (int) marks packed sequences: a new sequence starts wherever the id
  changes, and no information crosses that boundary.
- ``cache = mixer.init_cache(batch_size, max_len, dtype)`` makes an empty decode cache;
  ``y, cache = mixer(x, cache=cache)`` with ``x [B, T, D]`` prefills it, and later calls with
  ``x [B, 1, D]`` decode one token at a time. Caches are pytrees (jit- and scan-friendly),
  and all rows of a batch share one position counter.

Invariant (tested for every registered mixer): full forward == prefill of a prefix followed by
token-by-token decode, and packed sequences == the same sequences run one by one.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax


@runtime_checkable
class Mixer(Protocol):
    def __call__(
        self, x: jax.Array, *, cache: Any = None, segment_ids: jax.Array | None = None
    ) -> tuple[jax.Array, Any]: ...

    def init_cache(self, batch_size: int, max_len: int, dtype: Any) -> Any: ...


def check_call(x: jax.Array, d_model: int, cache: Any, segment_ids: jax.Array | None) -> None:
    """Validates a mixer call: ``x [B, T, d_model]``; segment_ids only without a cache."""
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"x must have shape [B, T, {d_model}] ([B, T, d_model]); got {x.shape}")
    if segment_ids is not None:
        if cache is not None:
            raise ValueError(
                "segment_ids (packed training sequences) cannot be combined with a decode cache; "
                "decode one sequence per batch row"
            )
        if segment_ids.shape != x.shape[:2]:
            raise ValueError(
                f"segment_ids must have shape {x.shape[:2]} ([B, T]); got {segment_ids.shape}"
            )
