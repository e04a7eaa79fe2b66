"""Content checksums and finiteness of a train state: what makes a checkpoint trustworthy.

A checkpoint records, in its JSON record, one checksum per array of the state and one of the
record itself; a restore recomputes them and refuses a checkpoint whose bytes changed
(a flipped byte, a truncated or swapped file) instead of training on wrong numbers.

**Array checksum.** The array is read as unsigned 32-bit words ``w_0 … w_{n−1}`` in its
logical (row-major) element order — float32/int32/uint32 bit-cast, 16-bit and 8-bit types
widened — and two sums mod 2³² are taken:

    s₁ = Σᵢ wᵢ · (2i + 1),        s₂ = Σᵢ (wᵢ ⊕ 0x9E3779B9) · (2·(i·0x85EBCA6B) + 1).

Both multipliers are odd, hence invertible mod 2³², so changing any single word always
changes both sums; words moved between positions change them too. The sums depend only on
the array's values and shape, never on how it is sharded, so a checkpoint saved under one mesh
verifies under another, and they run as one jitted reduction on the devices that hold the
array (no gather to a host).

**Record checksum.** SHA-256 of the JSON record (without its ``checksums`` entry), serialised
with sorted keys.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

CHECKSUM_KEY = "checksums"  # where a checkpoint's JSON record keeps its checksums
_MIX = np.uint32(0x9E3779B9)
_STRIDE = np.uint32(0x85EBCA6B)


def _words(x: jax.Array) -> jax.Array:
    """``x`` as a flat uint32 vector in logical element order."""
    x = jnp.asarray(x)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.reshape(-1).astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    if size == 2:
        return jax.lax.bitcast_convert_type(x, jnp.uint16).reshape(-1).astype(jnp.uint32)
    if size == 1:
        return jax.lax.bitcast_convert_type(x, jnp.uint8).reshape(-1).astype(jnp.uint32)
    if size == 8:  # two words per element
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    raise ValueError(f"cannot checksum an array of dtype {x.dtype}")


def _array_sums(x: jax.Array) -> jax.Array:
    """``uint32[2]``: the two position-weighted sums (module docstring)."""
    w = _words(x)
    i = jnp.arange(w.shape[0], dtype=jnp.uint32)
    s1 = jnp.sum(w * (2 * i + 1), dtype=jnp.uint32)
    s2 = jnp.sum((w ^ _MIX) * (2 * (i * _STRIDE) + 1), dtype=jnp.uint32)
    return jnp.stack([s1, s2])


@jax.jit
def _tree_sums(tree: Any) -> Any:
    return jax.tree.map(_array_sums, tree)


@jax.jit
def _tree_finite(tree: Any) -> Any:
    def finite(x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.all(jnp.isfinite(x))
        return jnp.ones((), bool)

    return jax.tree.map(finite, tree)


def _path_names(tree: Any) -> list[str]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in leaves]


def state_checksums(state: Any) -> dict[str, str]:
    """``{"params/…/kernel": "0123abcd89ef4567", …}``: one checksum per array of ``state``."""
    sums = jax.tree.leaves(jax.device_get(_tree_sums(state)))
    return {
        name: f"{int(s[0]):08x}{int(s[1]):08x}"
        for name, s in zip(_path_names(state), sums, strict=True)
    }


def verify_checksums(state: Any, recorded: dict[str, str]) -> list[str]:
    """The problems found comparing ``state`` with ``recorded`` checksums (empty = verified):
    arrays whose content changed, arrays missing from the record, recorded arrays absent."""
    got = state_checksums(state)
    problems = [
        f"{name}: content changed" for name in got if recorded.get(name, got[name]) != got[name]
    ]
    problems += [f"{name}: no recorded checksum" for name in got if name not in recorded]
    problems += [f"{name}: recorded but not in the state" for name in recorded if name not in got]
    return problems


def nonfinite_arrays(tree: Any) -> list[str]:
    """Names of the floating arrays of ``tree`` holding a NaN or an infinity."""
    flags = jax.tree.leaves(jax.device_get(_tree_finite(tree)))
    return [name for name, ok in zip(_path_names(tree), flags, strict=True) if not bool(ok)]


def record_digest(record: dict) -> str:
    """SHA-256 of the JSON record without its ``checksums`` entry (sorted keys)."""
    body = {k: v for k, v in record.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def sign_record(record: dict, state: Any) -> dict:
    """``record`` with ``checksums = {"arrays": …, "record": …}`` added."""
    out = dict(record)
    out.pop(CHECKSUM_KEY, None)
    out[CHECKSUM_KEY] = {"arrays": state_checksums(state), "record": record_digest(out)}
    return out


def verify_record(record: dict, state: Any) -> list[str]:
    """Problems found checking a restored ``(record, state)`` pair against the record's own
    checksums (empty = verified). A record without checksums is reported, not trusted."""
    sums = record.get(CHECKSUM_KEY)
    if not isinstance(sums, dict) or "arrays" not in sums or "record" not in sums:
        return ["the record holds no checksums (written by an older memarch, or damaged)"]
    problems = []
    if record_digest(record) != sums["record"]:
        problems.append("the JSON record's content changed")
    return problems + verify_checksums(state, sums["arrays"])


__all__ = [
    "CHECKSUM_KEY",
    "nonfinite_arrays",
    "record_digest",
    "sign_record",
    "state_checksums",
    "verify_checksums",
    "verify_record",
]
