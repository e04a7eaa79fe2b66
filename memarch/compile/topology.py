"""TPU chips and topologies to compile for, without the chips: ``"v5e:16x16"`` -> its devices.

A topology name is ``<chip>:<AxB[xC]>`` (the names ``jax.experimental.topologies`` and libtpu
take: ``v5e:2x2``, ``v5e:16x16``, ``v4:4x4x8``, ``v5p:4x4x8``, ``v6e:16x16``). With ``libtpu``
installed, :func:`topology_devices` returns the topology's TPU devices on any host (a CPU
machine included); a ``jax.jit(...).lower(...).compile()`` over a mesh of them produces the real
TPU executable (its memory and cost analyses), though nothing can run.

:data:`CHIPS` holds what the compile report measures against, per chip (Google Cloud TPU
documentation, "TPU versions": v4, v5e, v5p, v6e system-architecture pages):

=====  ==============  ======================  =================================
chip   HBM per chip    peak bf16 per chip      devices per chip
=====  ==============  ======================  =================================
v4     32 GiB          275 TFLOP/s             1 (megacore: 2 TensorCores as one)
v5e    16 GiB          197 TFLOP/s             1
v5p    95 GiB          459 TFLOP/s             1 (megacore)
v6e    32 GiB          918 TFLOP/s             1
=====  ==============  ======================  =================================

The number of chips in a topology is the product of its dimensions; each chip is one JAX device
(v4 and v5p chips are asked for in their "megacore" configuration, as JAX runs them, not as two
TensorCores). Cloud's slice names count TensorCores for v4 and v5p: v4-128 is ``v4:4x4x4``
(64 chips), v5p-128 is ``v5p:4x4x4``; for v5e and v6e they count chips: v5e-256 is
``v5e:16x16``.

libtpu takes a process-wide lock file (``/tmp/libtpu_lockfile``) when it loads, so that two
processes do not drive the same chips; a compile-only process drives none, so
``ALLOW_MULTIPLE_LIBTPU_LOAD=1`` is set (unless already set) to compile beside other JAX
processes on the same host.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence

import jax
from jax.experimental import topologies

from memarch.errors import UserError
from memarch.kernels import tpu_topology_devices


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str  # the chip generation as in topology names ("v5e")
    hbm_gib: float  # high-bandwidth memory of one chip (one JAX device), GiB
    peak_bf16_tflops: float  # dense bfloat16 matmul peak of one chip, TFLOP/s


MEGACORE = ("v4", "v5p")  # chips whose two TensorCores JAX drives as one device

CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 32.0, 275.0),
    "v5e": Chip("v5e", 16.0, 197.0),
    "v5p": Chip("v5p", 95.0, 459.0),
    "v6e": Chip("v6e", 32.0, 918.0),
}

_NAME = re.compile(r"^(?P<chip>[a-z0-9]+):(?P<dims>\d+(?:x\d+){1,2})$")


class TopologyError(UserError):
    """A topology name that is malformed, names an unknown chip, or that libtpu refuses."""


def parse_topology(name: str) -> tuple[Chip, tuple[int, ...]]:
    """``"v5e:16x16"`` -> ``(CHIPS["v5e"], (16, 16))``; :class:`TopologyError` naming the
    accepted chips and the form otherwise."""
    match = _NAME.match(name.strip().lower()) if isinstance(name, str) else None
    if match is None:
        raise TopologyError(
            f"--topology must look like <chip>:<AxB> or <chip>:<AxBxC> (e.g. v5e:16x16, "
            f"v4:4x4x8) with chip one of {sorted(CHIPS)}; got {name!r}"
        )
    chip = match["chip"]
    if chip not in CHIPS:
        raise TopologyError(
            f"--topology {name!r}: unknown TPU chip {chip!r}; accepted: {sorted(CHIPS)}"
        )
    dims = tuple(int(d) for d in match["dims"].split("x"))
    if any(d < 1 for d in dims):
        raise TopologyError(f"--topology {name!r}: every dimension must be >= 1")
    return CHIPS[chip], dims


def num_chips(name: str) -> int:
    """Chips (JAX devices) of topology ``name``: the product of its dimensions."""
    return math.prod(parse_topology(name)[1])


def topology_devices(name: str) -> Sequence[jax.Device]:
    """The TPU devices of topology ``name`` for ahead-of-time compilation on this host, one
    per chip.

    Needs the ``libtpu`` package; asks for the TPU platform explicitly, so it works while the
    process's own backend is the CPU. v5e and v6e come from
    :func:`memarch.kernels.tpu_topology_devices` (which also sets libtpu up for a compile-only
    host); v4 and v5p are asked for as megacore chips here, since libtpu's default for them is
    one device per TensorCore. Raises :class:`TopologyError` for a bad name or one libtpu does
    not know."""
    chip, dims = parse_topology(name)
    canonical = f"{chip.name}:{'x'.join(map(str, dims))}"
    try:
        if chip.name in MEGACORE:
            os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no chip used
            desc = topologies.get_topology_desc(
                topology_name=canonical, platform="tpu", chip_config_name="megacore"
            )
            devices = list(desc.devices)
        else:
            devices = tpu_topology_devices(canonical)
    except Exception as err:  # libtpu missing or the shape unknown to it: one clear line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TopologyError(
            f"--topology {name!r}: libtpu could not describe it ({first}); is libtpu installed "
            "(pip install 'jax[tpu]') and is the shape a real slice of that chip?"
        ) from err
    if len(devices) != math.prod(dims):
        raise TopologyError(
            f"--topology {name!r}: libtpu gave {len(devices)} devices for {math.prod(dims)} chips"
        )
    return devices


__all__ = ["CHIPS", "Chip", "TopologyError", "num_chips", "parse_topology", "topology_devices"]
