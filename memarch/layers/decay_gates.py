"""Pluggable decay gates (learned log-decay projections) of the gated linear-attention mixers
(``gla``, ``gated_deltanet``).

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

    @register_decay_gate("sigmoid_head")
    class SigmoidHead(nnx.Module):
        def __init__(self, *, d_model, num_heads, key_dim, rngs):
            self.proj = nnx.Linear(d_model, num_heads, rngs=rngs)

        def __call__(self, x):
            return jax.nn.log_sigmoid(self.proj(x).astype(jnp.float32) + 3.0)

    build("gated_deltanet", d_model=64, num_heads=2, rngs=nnx.Rngs(0), gate="sigmoid_head")

The mixers' own gates are built into the mixers (their parameters keep their names) and are
registered in :data:`DECAY_GATES` beside the user gates, with no class: ``gla`` accepts
``gate="channel"`` (default) or ``"head"``, ``gated_deltanet`` ``gate="mamba2"`` (default).
Each entry's metadata: ``per_channel`` (bool) and ``mixers`` (the mixers that accept it).
:func:`memarch.mixers.conformance.check_gate` verifies a gate end to end.
"""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

from memarch.registry import Entry, Registry

DECAY_GATE_MIXERS = ("gla", "gated_deltanet")  # the mixers with a pluggable decay gate

# name -> decay gate module class (None: built into the mixer); metadata per_channel, mixers
DECAY_GATES: Registry[type | None] = Registry("decay gate")
DECAY_GATES.register("channel", None, per_channel=True, mixers=("gla",))
DECAY_GATES.register("head", None, per_channel=False, mixers=("gla",))
DECAY_GATES.register("mamba2", None, per_channel=False, mixers=("gated_deltanet",))
DECAY_GATES.seal()


def builtin_decay_gates(mixer: str) -> list[str]:
    """The decay gates built into ``mixer`` (its own parameters), sorted."""
    return [n for n in DECAY_GATES.builtins() if mixer in DECAY_GATES.metadata(n)["mixers"]]


def user_decay_gates() -> list[str]:
    """Names of the registered gate modules (every entry that is not built in), sorted."""
    return [n for n in DECAY_GATES.available() if DECAY_GATES.get(n) is not None]


def register_decay_gate(
    name: str, *, per_channel: bool = False, replace: bool = False
) -> Callable[[type], type]:
    """Class decorator registering a decay gate ``cls(*, d_model, num_heads, key_dim, rngs)``
    whose call maps ``x [B, T, D]`` to ``g [B, T, H]`` (or ``[B, T, H, K]`` with
    ``per_channel``, then usable in ``gla`` only). ``replace=True`` re-registers an existing
    name (e.g. a notebook cell run twice)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"gate name must be a non-empty str; got {name!r}")
    if name in DECAY_GATES.builtins():
        raise ValueError(
            f"gate name {name!r} is a built-in gate; built-ins: {DECAY_GATES.builtins()}"
        )
    if name in DECAY_GATES and not replace:
        raise ValueError(f"gate {name!r} is already registered (pass replace=True to replace it)")
    mixers = ("gla",) if per_channel else DECAY_GATE_MIXERS

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, nnx.Module)):
            raise ValueError(f"gate {name!r} must be an nnx.Module subclass; got {cls!r}")
        DECAY_GATES.register(name, cls, replace=True, per_channel=bool(per_channel), mixers=mixers)
        return cls

    return deco


def unregister_decay_gate(name: str) -> None:
    """Removes gate ``name`` from the registry (built-ins stay)."""
    if name not in user_decay_gates():
        raise ValueError(f"gate {name!r} is not registered; registered: {user_decay_gates()}")
    DECAY_GATES.unregister(name)


def decay_gate_entry(name: str, *, mixer: str) -> Entry:
    """The registered gate ``name`` for ``mixer``; ``ValueError`` listing the accepted names
    when it is unknown, or per-channel where ``mixer`` needs one decay per head."""
    accepted = [*builtin_decay_gates(mixer), *user_decay_gates()]
    if name not in DECAY_GATES or (DECAY_GATES.get(name) is None and name not in accepted):
        raise ValueError(f"gate must be one of {accepted} for {mixer}; got {name!r}")
    entry = DECAY_GATES.entry(name)
    if mixer not in entry.metadata["mixers"]:
        raise ValueError(
            f"gate {name!r} is per key channel; {mixer} needs one decay per head "
            "(register it with per_channel=False)"
        )
    return entry


def build_decay_gate(
    name: str, *, mixer: str, d_model: int, num_heads: int, key_dim: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Instantiates registered gate module ``name`` for a ``mixer`` layer of the given widths."""
    entry = decay_gate_entry(name, mixer=mixer)
    if entry.value is None:
        raise ValueError(f"gate {name!r} is built into {mixer}; it has no module to build")
    return entry.value(d_model=d_model, num_heads=num_heads, key_dim=key_dim, rngs=rngs)


def check_decay_gate_output(
    name: str, g, *, batch: int, length: int, num_heads: int, key_dim: int
) -> None:
    """``ValueError`` unless ``g`` has the shape gate ``name`` declares (checked at trace time)."""
    per_channel = DECAY_GATES.metadata(name)["per_channel"]
    want = (batch, length, num_heads) + ((key_dim,) if per_channel else ())
    if tuple(g.shape) != want:
        kind = "per channel [B, T, H, K]" if per_channel else "per head [B, T, H]"
        raise ValueError(f"gate {name!r} ({kind}) must return shape {want}; got {g.shape}")
