"""The mixer registry: every sequence mixer is registered by name with its config dataclass.

``build(name, d_model=..., num_heads=..., rngs=..., **options)`` validates ``options`` against
the mixer's config fields, so a config file or a notebook can say ``mixer="gated_deltanet"``
without touching core code. A one-letter alias lets layer patterns such as ``"LLLA"`` name it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from flax import nnx


@dataclasses.dataclass(frozen=True)
class _Entry:
    cls: type
    config: type
    letter: str | None


_MIXERS: dict[str, _Entry] = {}


def register(name: str, *, config: type, letter: str | None = None) -> Callable[[type], type]:
    """Class decorator registering a mixer ``cls(config, *, d_model, num_heads, rngs)``.

    ``config`` is a frozen dataclass of the mixer's options (each with a default).
    ``letter`` is the mixer's one-character name in layer patterns.
    """
    if letter is not None and (len(letter) != 1 or not letter.isupper()):
        raise ValueError(f"mixer letter must be one upper-case character; got {letter!r}")

    def deco(cls: type) -> type:
        if name in _MIXERS:
            raise ValueError(f"mixer {name!r} is already registered")
        if letter is not None and letter in letters():
            raise ValueError(f"pattern letter {letter!r} already names {letters()[letter]!r}")
        _MIXERS[name] = _Entry(cls, config, letter)
        return cls

    return deco


def available() -> list[str]:
    """Names of all registered mixers, sorted."""
    return sorted(_MIXERS)


def letters() -> dict[str, str]:
    """Pattern letter -> mixer name."""
    return {e.letter: n for n, e in _MIXERS.items() if e.letter is not None}


def _entry(name: str) -> _Entry:
    if name not in _MIXERS:
        close = difflib.get_close_matches(name, available(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown mixer {name!r}{hint}; available mixers: {available()}")
    return _MIXERS[name]


def config_class(name: str) -> type:
    """The options dataclass of mixer ``name``."""
    return _entry(name).config


def make_config(name: str, **options: Any) -> Any:
    """Builds mixer ``name``'s config from ``options``, rejecting unknown option names."""
    cfg_cls = _entry(name).config
    fields = [f.name for f in dataclasses.fields(cfg_cls)]
    for key in options:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown option {key!r} for mixer {name!r}{hint}; accepted options: {fields}"
            )
    return cfg_cls(**options)


def build(name: str, *, d_model: int, num_heads: int, rngs: nnx.Rngs, **options: Any):
    """Builds mixer ``name``; ``options`` are its config fields (defaults apply to the rest)."""
    if d_model <= 0:
        raise ValueError(f"d_model must be a positive int; got {d_model}")
    if num_heads <= 0:
        raise ValueError(f"num_heads must be a positive int; got {num_heads}")
    config = make_config(name, **options)
    return _entry(name).cls(config, d_model=d_model, num_heads=num_heads, rngs=rngs)
