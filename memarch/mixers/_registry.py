"""The mixer registry: every sequence mixer is registered by name with its options dataclass.

``build(name, d_model=..., num_heads=..., rngs=..., **options)`` validates ``options`` against
the mixer's options fields, so a config file or a notebook can say ``mixer="gated_deltanet"``
without touching core code. A one-letter alias lets layer patterns such as ``"LLLA"`` name it.
:data:`MIXERS` is a :class:`memarch.registry.Registry` whose entries carry the metadata
``config`` (the options dataclass) and ``letter`` (the pattern letter or None).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

from memarch.registry import Registry, build_options


def _check_mixer(name: str, cls: Any, metadata: Mapping[str, Any]) -> None:
    config = metadata.get("config")
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise ValueError(f"mixer {name!r}: config must be an options dataclass; got {config!r}")
    letter = metadata.get("letter")
    if letter is not None and letter in letters():
        raise ValueError(f"pattern letter {letter!r} already names {letters()[letter]!r}")


MIXERS: Registry[type] = Registry("mixer", check=_check_mixer)


def register(name: str, *, config: type, letter: str | None = None) -> Callable[[type], type]:
    """Class decorator registering a mixer ``cls(config, *, d_model, num_heads, rngs)``.

    ``config`` is a frozen dataclass of the mixer's options (each with a default).
    ``letter`` is the mixer's one-character name in layer patterns.
    """
    if letter is not None and (len(letter) != 1 or not letter.isupper()):
        raise ValueError(f"mixer letter must be one upper-case character; got {letter!r}")
    return MIXERS.register(name, config=config, letter=letter)


def unregister(name: str) -> None:
    """Removes a mixer registered outside memarch (built-in mixers stay)."""
    MIXERS.unregister(name)


def available() -> list[str]:
    """Names of all registered mixers, sorted."""
    return MIXERS.available()


def letters() -> dict[str, str]:
    """Pattern letter -> mixer name."""
    out = {}
    for name in MIXERS.available():
        letter = MIXERS.metadata(name)["letter"]
        if letter is not None:
            out[letter] = name
    return out


def config_class(name: str) -> type:
    """The options dataclass of mixer ``name``."""
    return MIXERS.metadata(name)["config"]


def make_config(name: str, *, where: str | None = None, **options: Any) -> Any:
    """Builds mixer ``name``'s options dataclass from ``options``, rejecting unknown option
    names (closest one suggested) and values of the wrong type. ``where`` names the options
    in errors (default ``name``, e.g. ``model.mixers.gla`` from a config)."""
    return build_options(config_class(name), options, where=where or name)


def build(name: str, *, d_model: int, num_heads: int, rngs: nnx.Rngs, **options: Any):
    """Builds mixer ``name``; ``options`` are its config fields (defaults apply to the rest).
    ``config=`` instead passes a ready options dataclass of that mixer."""
    if d_model <= 0:
        raise ValueError(f"d_model must be a positive int; got {d_model}")
    if num_heads <= 0:
        raise ValueError(f"num_heads must be a positive int; got {num_heads}")
    cls = MIXERS.get(name)
    config = options.pop("config", None)
    if config is None:
        config = make_config(name, **options)
    elif options or type(config) is not config_class(name):
        raise ValueError(
            f"mixer {name!r}: pass either config= (a {config_class(name).__name__}) or options"
        )
    return cls(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
