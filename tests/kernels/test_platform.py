"""Tests for memarch.kernels._platform: the interpret default and compiler parameters follow the
target platform (an explicit one, or the target of memarch.kernels._target)."""

from __future__ import annotations

import pytest
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu_triton

from memarch.kernels import _platform, compile_target

SEMANTICS = ("parallel", "arbitrary")


@pytest.mark.parametrize(
    "platform, interpreted, params",
    [("cpu", True, type(None)), ("gpu", False, plgpu_triton.CompilerParams),
     ("tpu", False, pltpu.CompilerParams)],
)  # fmt: skip
def test_interpret_default_and_params_follow_the_target(platform, interpreted, params):
    assert _platform.resolve_interpret(None, platform) is interpreted
    assert isinstance(_platform.compiler_params(SEMANTICS, platform=platform), params)
    with compile_target(platform):  # the same, from the target
        assert _platform.backend() == platform
        assert _platform.resolve_interpret(None) is interpreted
        assert isinstance(_platform.compiler_params(SEMANTICS), params)
    assert _platform.resolve_interpret(True, platform) is True
    assert _platform.resolve_interpret(False, platform) is False
    assert isinstance(_platform.resolve_interpret("tpu", platform), pltpu.InterpretParams)


def test_tpu_params_carry_the_grid_semantics():
    params = _platform.compiler_params(SEMANTICS, platform="tpu")
    assert tuple(params.dimension_semantics) == SEMANTICS


def test_bad_interpret_raises():
    with pytest.raises(ValueError, match=r"interpret must be one of \[None, True, False, 'tpu'\]"):
        _platform.resolve_interpret("gpu", "cpu")
