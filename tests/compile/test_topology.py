"""Topology names: parsing, the chip table, and libtpu's devices for a topology."""

import pytest

from memarch.compile.topology import (
    CHIPS,
    TopologyError,
    num_chips,
    parse_topology,
    topology_devices,
)


@pytest.mark.parametrize(
    "name,chip,dims",
    [("v5e:16x16", "v5e", (16, 16)), ("v4:4x4x4", "v4", (4, 4, 4)), ("V6E:2x2", "v6e", (2, 2))],
)
def test_parse(name, chip, dims):
    got, shape = parse_topology(name)
    assert got is CHIPS[chip] and shape == dims


@pytest.mark.parametrize(
    "name,match",
    [
        ("v7x:2x2", "unknown TPU chip 'v7x'; accepted: ['v4', 'v5e', 'v5p', 'v6e']"),
        ("v5e", "must look like <chip>:<AxB>"),
        ("v5e:2x", "must look like"),
        ("v5e:0x2", "every dimension must be >= 1"),
    ],
)
def test_bad_names_are_one_clear_error(name, match):
    with pytest.raises(TopologyError, match=match.replace("[", r"\[").replace("(", r"\(")):
        parse_topology(name)


def test_chip_table():
    # HBM GiB and bf16 TFLOP/s per chip (Cloud TPU documentation)
    assert {n: (c.hbm_gib, c.peak_bf16_tflops) for n, c in CHIPS.items()} == {
        "v4": (32, 275),
        "v5e": (16, 197),
        "v5p": (95, 459),
        "v6e": (32, 918),
    }


@pytest.mark.parametrize("name,kind", [("v5e:2x2", "TPU v5 lite"), ("v4:2x2x1", "TPU v4")])
def test_devices_one_per_chip(name, kind):
    devices = topology_devices(name)
    assert len(devices) == num_chips(name) == 4  # v4 as megacore: 2x2x1 is 4 devices, not 8
    assert {d.platform for d in devices} == {"tpu"} and devices[0].device_kind == kind


def test_a_shape_libtpu_refuses_is_named():
    with pytest.raises(TopologyError, match="'v5e:3x3': libtpu could not describe it"):
        topology_devices("v5e:3x3")
