"""One registry pattern for every pluggable family of memarch (rank 0: imports nothing of it).

A :class:`Registry` maps a name to a value (a class, a function, a spec) plus per-entry
metadata (e.g. a mixer's options dataclass and pattern letter, or whether a memory retention
uses the decay gate). Built-in and user entries live in the same registry; built-ins are the
entries present when the owning module calls :meth:`Registry.seal`, and only they refuse to be
replaced or removed::

    TASKS = Registry("task")

    @TASKS.register("mqar", slice_names=("L", "pairs"))   # decorator form
    def mqar_spec(...): ...

    TASKS.register("needle", needle_spec, slice_names=("L", "needles"))   # call form
    TASKS.get("mqr")  # ValueError: unknown task 'mqr' (did you mean 'mqar'?); available: [...]

:func:`build_options` makes an options dataclass from a mapping, checking names (closest valid
name suggested) and value types (:func:`matches_type`) before anything is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


_DECORATE = object()  # Registry.register without a value: the decorator form


@dataclasses.dataclass(frozen=True)
class Entry[T]:
    """One registered name: its value, metadata and whether it is a built-in."""

    name: str
    value: T
    metadata: Mapping[str, Any]
    builtin: bool = False


def did_you_mean(name: str, accepted: list[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest accepted name, or ``""``."""
    close = difflib.get_close_matches(str(name), accepted, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry[T]:
    """Name -> value, with metadata per entry.

    ``kind`` names the family in error messages ("mixer", "eviction policy", ...).
    ``check(name, value, metadata)`` (optional) validates an entry before it is stored and
    raises ``ValueError`` when it is unfit.
    """

    def __init__(
        self, kind: str, *, check: Callable[[str, T, Mapping[str, Any]], None] | None = None
    ):
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"registry kind must be a non-empty str; got {kind!r}")
        self.kind = kind
        self._check = check
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, value: Any = _DECORATE, /, *, replace: bool = False, **metadata):
        """Registers ``value`` under ``name``; without ``value``, returns a decorator that
        registers what it decorates (and returns it unchanged).

        ``replace=True`` re-registers a user entry (e.g. a notebook cell run twice); a
        duplicate name otherwise raises ``ValueError``, and built-ins are never replaced.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty str; got {name!r}")
        old = self._entries.get(name)
        if old is not None and (old.builtin or not replace):
            what = f"a built-in {self.kind}" if old.builtin else "already registered"
            extra = "" if old.builtin else " (pass replace=True to replace it)"
            raise ValueError(
                f"{self.kind} {name!r} is {what}{extra}; registered: {self.available()}"
            )

        def deco(obj: Any) -> Any:
            if self._check is not None:
                self._check(name, obj, metadata)
            self._entries[name] = Entry(name, obj, types.MappingProxyType(dict(metadata)))
            return obj

        return deco if value is _DECORATE else deco(value)

    def seal(self) -> None:
        """Marks every entry registered so far as built-in (never replaced nor removed)."""
        for name, e in self._entries.items():
            self._entries[name] = dataclasses.replace(e, builtin=True)

    def unregister(self, name: str) -> None:
        """Removes user entry ``name``; ``ValueError`` for built-ins and unknown names."""
        e = self.entry(name)
        if e.builtin:
            raise ValueError(f"{self.kind} {name!r} is a built-in and cannot be removed")
        del self._entries[name]

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name``; ``ValueError`` listing the available names (closest first)."""
        if name not in self._entries:
            raise ValueError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self.available())}; "
                f"available: {self.available()}"
            )
        return self._entries[name]

    def choice(self, field: str, name: Any) -> T:
        """The value of ``name`` given as config field ``field``; ``ValueError`` starting with
        the field's name and listing the accepted names otherwise."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(
                f"{field} must be one of {self.available()}; got {name!r}"
                f"{did_you_mean(str(name), self.available())}"
            )
        return self._entries[name].value

    def get(self, name: str) -> T:
        """The value registered under ``name`` (``ValueError`` as :meth:`entry`)."""
        return self.entry(name).value

    def metadata(self, name: str) -> Mapping[str, Any]:
        """The metadata given when ``name`` was registered (read-only)."""
        return self.entry(name).metadata

    def available(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def builtins(self) -> list[str]:
        """The built-in names, sorted."""
        return sorted(n for n, e in self._entries.items() if e.builtin)

    def items(self) -> list[tuple[str, T]]:
        """``(name, value)`` of every entry, sorted by name."""
        return [(n, self._entries[n].value) for n in self.available()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.available()})"


def matches_type(value: Any, tp: Any) -> bool:
    """Loose runtime check of ``value`` against a type annotation (ints pass as floats; bools
    pass as neither; tuples element-wise; other generics by their origin)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches_type(v, args[0]) for v in value)
        return len(args) == len(value) and all(
            matches_type(v, a) for v, a in zip(value, args, strict=True)
        )
    if origin is not None and isinstance(origin, type):
        return isinstance(value, origin)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value


def build_options(cls: type, values: Mapping[str, Any], *, where: str) -> Any:
    """``cls(**values)`` for an options dataclass ``cls``, checked first: every key must be a
    field (else ``ValueError`` naming ``where.key``, the closest field and all fields) and
    every value must match its field's annotation (lists become tuples, ints become floats
    for float fields). A dataclass-typed field also accepts a mapping of its own fields."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping of option names to values; got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, raw in values.items():
        if key not in fields:
            raise ValueError(
                f"unknown option {key!r} ({where}.{key}){did_you_mean(key, fields)}; "
                f"accepted options: {fields}"
            )
        tp = hints[key]
        value = _to_tuples(raw)
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            value = build_options(tp, value, where=f"{where}.{key}")
        if not matches_type(value, tp):
            raise ValueError(
                f"{where}.{key} expects {getattr(tp, '__name__', tp)}; "
                f"got {value!r} ({type(value).__name__})"
            )
        if tp is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)
