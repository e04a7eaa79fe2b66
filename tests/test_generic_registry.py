"""The generic Registry (memarch.registry) and typed options (build_options, matches_type)."""

from __future__ import annotations

import dataclasses

import pytest

from memarch.registry import Registry, build_options, matches_type


def _fresh() -> Registry:
    reg = Registry("widget")
    reg.register("alpha", 1, size=3)  # call form
    reg.register("empty", None, size=0)  # None is a value too (e.g. a gate built into a mixer)
    reg.seal()  # alpha is the built-in

    @reg.register("beta", size=5)  # decorator form
    def beta():
        return 2

    return reg


def test_register_call_and_decorator_forms_and_metadata():
    reg = _fresh()
    assert reg.available() == ["alpha", "beta", "empty"] and reg.get("empty") is None
    assert reg.get("alpha") == 1 and reg.get("beta")() == 2
    assert reg.metadata("alpha")["size"] == 3 and reg.metadata("beta")["size"] == 5
    assert reg.builtins() == ["alpha", "empty"] and "beta" in reg and len(reg) == 3
    with pytest.raises(TypeError):
        reg.metadata("alpha")["size"] = 4  # read-only


def test_get_names_available_and_closest():
    with pytest.raises(
        ValueError,
        match=r"unknown widget 'alpah' \(did you mean 'alpha'\?\); available: "
        r"\['alpha', 'beta', 'empty'\]",
    ):
        _fresh().get("alpah")
    with pytest.raises(
        ValueError, match=r"^size must be one of \['alpha', 'beta', 'empty'\]; got 'x'$"
    ):
        _fresh().choice("size", "x")


def test_duplicates_builtins_and_replace():
    reg = _fresh()
    reg.unregister("beta")
    reg.register("beta", 2)
    with pytest.raises(ValueError, match="'beta' is already registered"):
        reg.register("beta", 3)
    reg.register("beta", 3, replace=True, size=6)
    assert reg.get("beta") == 3 and reg.metadata("beta")["size"] == 6
    with pytest.raises(ValueError, match="'alpha' is a built-in widget"):
        reg.register("alpha", 0, replace=True)
    with pytest.raises(ValueError, match="built-in and cannot be removed"):
        reg.unregister("alpha")
    reg.unregister("beta")
    assert reg.available() == ["alpha", "empty"]
    with pytest.raises(ValueError, match="non-empty str"):
        reg.register("", 1)


def test_check_hook_rejects_unfit_entries():
    def positive(name, value, metadata):
        if value <= 0:
            raise ValueError(f"widget {name!r} must be positive")

    reg = Registry("widget", check=positive)
    with pytest.raises(ValueError, match="must be positive"):
        reg.register("neg", -1)
    assert "neg" not in reg


@dataclasses.dataclass(frozen=True)
class _Inner:
    k: int = 1


@dataclasses.dataclass(frozen=True)
class _Options:
    width: int = 4
    scale: float = 1.0
    name: str | None = None
    sizes: tuple[int, ...] = ()
    inner: _Inner = _Inner()


def test_build_options_checks_names_and_types():
    opts = build_options(
        _Options, {"scale": 2, "sizes": [1, 2], "inner": {"k": 3}}, where="model.x"
    )
    assert opts == _Options(scale=2.0, sizes=(1, 2), inner=_Inner(3))
    assert isinstance(opts.scale, float)
    with pytest.raises(
        ValueError,
        match=r"unknown option 'widht' \(model\.x\.widht\) "
        r"\(did you mean 'width'\?\); accepted options: \['width'",
    ):
        build_options(_Options, {"widht": 3}, where="model.x")
    with pytest.raises(ValueError, match=r"model\.x\.width expects int; got 'three' \(str\)"):
        build_options(_Options, {"width": "three"}, where="model.x")
    with pytest.raises(ValueError, match=r"model\.x\.inner\.k expects int"):
        build_options(_Options, {"inner": {"k": 1.5}}, where="model.x")


@pytest.mark.parametrize(
    "value,tp,ok",
    [
        (1, float, True),
        (True, int, False),
        (True, float, False),
        (None, int | None, True),
        ((1, 2), tuple[int, ...], True),
        ((1, "a"), tuple[int, int], False),
        ("a", str, True),
        ({"a": 1}, dict[str, int], True),
    ],
)
def test_matches_type(value, tp, ok):
    assert matches_type(value, tp) is ok
