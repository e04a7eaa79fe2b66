"""Pluggable decay gates for the gated linear-attention mixers (``gla``, ``gated_deltanet``).

A decay gate maps the layer input to the log decay of the recurrence
``S_t = Diag(exp(g_t)) S_{t−1} + (write)``:

    gate(x [B, T, D]) -> g   float32, g ≤ 0,   [B, T, H]     (per_channel=False: one per head)
                                               [B, T, H, K]  (per_channel=True: one per key
                                                              channel; ``gla`` only)

``g_t`` must depend on ``x_t`` alone (token-local): the mixers call the gate on the whole
sequence in training and on one token at a time while decoding, so anything that looks at other
tokens breaks decode (and, looking ahead, causality). A gate is an ``nnx.Module`` built as
``cls(*, d_model, num_heads, key_dim, rngs)``. Register it by name, then select it with the
mixer option ``gate=name``::

    @register_gate("sigmoid_head")
    class SigmoidHead(nnx.Module):
        def __init__(self, *, d_model, num_heads, key_dim, rngs):
            self.proj = nnx.Linear(d_model, num_heads, rngs=rngs)

        def __call__(self, x):
            return jax.nn.log_sigmoid(self.proj(x).astype(jnp.float32) + 3.0)

    build("gated_deltanet", d_model=64, num_heads=2, rngs=nnx.Rngs(0), gate="sigmoid_head")

The mixers' own gates stay built in (their parameters keep their names): ``gla`` accepts
``gate="channel"`` (default) or ``"head"``, ``gated_deltanet`` ``gate="mamba2"`` (default).
:func:`memarch.mixers.conformance.check_gate` verifies a gate end to end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from flax import nnx

# Built-in gate names of the mixers (not in the registry; they cannot be registered).
BUILTIN_GATES: dict[str, tuple[str, ...]] = {
    "gla": ("channel", "head"),
    "gated_deltanet": ("mamba2",),
}


@dataclasses.dataclass(frozen=True)
class GateEntry:
    """A registered gate: its module class and whether it returns one decay per key channel."""

    cls: type
    per_channel: bool


_GATES: dict[str, GateEntry] = {}


def register_gate(
    name: str, *, per_channel: bool = False, replace: bool = False
) -> Callable[[type], type]:
    """Class decorator registering a decay gate ``cls(*, d_model, num_heads, key_dim, rngs)``
    whose call maps ``x [B, T, D]`` to ``g [B, T, H]`` (or ``[B, T, H, K]`` with
    ``per_channel``). ``replace=True`` re-registers an existing name (e.g. a notebook cell
    run twice)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"gate name must be a non-empty str; got {name!r}")
    builtin = {n for names in BUILTIN_GATES.values() for n in names}
    if name in builtin:
        raise ValueError(f"gate name {name!r} is a built-in gate; built-ins: {sorted(builtin)}")
    if name in _GATES and not replace:
        raise ValueError(f"gate {name!r} is already registered (pass replace=True to replace it)")

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, nnx.Module)):
            raise ValueError(f"gate {name!r} must be an nnx.Module subclass; got {cls!r}")
        _GATES[name] = GateEntry(cls, bool(per_channel))
        return cls

    return deco


def unregister_gate(name: str) -> None:
    """Removes gate ``name`` from the registry."""
    if name not in _GATES:
        raise ValueError(f"gate {name!r} is not registered; registered: {available_gates()}")
    del _GATES[name]


def available_gates() -> list[str]:
    """Names of the registered (non built-in) gates, sorted."""
    return sorted(_GATES)


def gate_entry(name: str, *, mixer: str) -> GateEntry:
    """The registered gate ``name`` for ``mixer``; ``ValueError`` listing the accepted names
    when it is unknown, or per-channel where ``mixer`` needs one decay per head."""
    accepted = [*BUILTIN_GATES.get(mixer, ()), *available_gates()]
    if name not in _GATES:
        raise ValueError(f"gate must be one of {accepted} for {mixer}; got {name!r}")
    entry = _GATES[name]
    if entry.per_channel and mixer == "gated_deltanet":
        raise ValueError(
            f"gate {name!r} is per key channel; gated_deltanet needs one decay per head "
            "(register it with per_channel=False)"
        )
    return entry


def build_gate(
    name: str, *, mixer: str, d_model: int, num_heads: int, key_dim: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Instantiates registered gate ``name`` for a ``mixer`` layer of the given widths."""
    entry = gate_entry(name, mixer=mixer)
    return entry.cls(d_model=d_model, num_heads=num_heads, key_dim=key_dim, rngs=rngs)


def check_gate_output(name: str, g, *, batch: int, length: int, num_heads: int, key_dim: int):
    """``ValueError`` unless ``g`` has the shape gate ``name`` declares (checked at trace time)."""
    entry = _GATES[name]
    want = (batch, length, num_heads) + ((key_dim,) if entry.per_channel else ())
    if tuple(g.shape) != want:
        kind = "per channel [B, T, H, K]" if entry.per_channel else "per head [B, T, H]"
        raise ValueError(f"gate {name!r} ({kind}) must return shape {want}; got {g.shape}")
