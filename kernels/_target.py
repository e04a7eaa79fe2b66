"""Which device a Pallas kernel is compiled for, and TPU topologies to compile for on any host.

A kernel's schedule, its ``interpret=None`` default, its block rounding and its compiler
parameters depend on the device it will run on, which is not always the machine it is traced
on: a CPU host can compile the training step for a TPU slice (libtpu's compile-only devices,
:func:`tpu_topology_devices`). :func:`target_platform` / :func:`target_device` give that
device, from the first of these that says something:

1. :func:`compile_target` — an explicit choice, ``with compile_target("tpu"):`` (a platform
   name), ``with compile_target(tpu_topology_devices("v5e:2x2")[0]):`` (a device, which also
   names the chip for the Mosaic lowering) or an :class:`jax.sharding.AbstractDevice`;
2. the current mesh — ``jax.set_mesh(mesh)`` / ``jax.sharding.use_abstract_mesh(...)`` make
   ``jax.sharding.get_abstract_mesh().abstract_device`` the mesh's device kind, during tracing
   and lowering alike (this is also where Pallas's own Mosaic/Triton lowerings look);
3. the kernel's inputs — under ``jit`` an argument given with a ``NamedSharding`` (an array
   placed with one, or a ``jax.ShapeDtypeStruct(..., sharding=...)``) carries its mesh's device
   kind in its type (``jax.typeof(x).sharding.mesh.abstract_device``);
4. JAX's default backend (``jax.default_backend()``, ``jax.devices()[0]``).

``jax.jit(f, in_shardings=...)`` alone puts no device in the traced types: use one of 1–3.
The choice is part of the ``jit`` cache key (``jax.make_user_context``), so tracing the same
function for the CPU and then under ``compile_target("tpu")`` re-traces it. Wrap the
``.lower()`` / ``.compile()`` call (not only the traced body) in :func:`compile_target` when
it names a chip: the Mosaic lowering, which runs after tracing, reads the chip from the
abstract mesh that :func:`compile_target` makes current.

TPU topologies on a host without a TPU. With ``libtpu`` installed (the ``dev`` and ``tpu``
extras), :func:`tpu_topology_devices` returns the compile-only devices of a named slice;
``jax.jit(...).lower(...).compile()`` over them runs libtpu's real compiler, Mosaic kernels
included. On a host with no TPU attached it first sets the libtpu environment for a single,
compile-only host (``TPU_SKIP_MDS_QUERY``, ``TPU_WORKER_HOSTNAMES=localhost``,
``TPU_HOST_BOUNDS=1,1,1``, ``ALLOW_MULTIPLE_LIBTPU_LOAD``: no metadata-server probe, no
initialisation warnings, and several test processes may load libtpu at once); values already
in the environment are kept. Such a process should run JAX on the CPU
(``JAX_PLATFORMS=cpu``; :func:`choose_platform`), which does not stop it from asking for TPU
topologies.

:func:`choose_platform` picks the CPU explicitly where no accelerator is attached, so that a
process that did not choose does not probe for a TPU at start-up (with libtpu installed that
costs time and prints a page of libtpu errors before falling back to the CPU).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator

import jax
from jax.sharding import AbstractDevice, AbstractMesh

PLATFORMS = ("cpu", "gpu", "tpu")
# device.platform spellings → the platform names used here
_PLATFORM_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}
TOPOLOGY_FORMS = (
    "'<TPU generation>:<chips per axis>', e.g. v5e:2x2, v6e:2x2, v4:2x2x1, v5p:2x2x1 "
    "(one chip: v5e:1x1)"
)
_TOPOLOGY_NAME = re.compile(r"^(v\d+[a-z]*):(\d+(?:x\d+){1,2})$")
# libtpu settings for a host that only compiles (no TPU attached); setdefault, never overwrite
COMPILE_ONLY_LIBTPU_ENV = {
    "TPU_SKIP_MDS_QUERY": "1",
    "TPU_WORKER_HOSTNAMES": "localhost",
    "TPU_HOST_BOUNDS": "1,1,1",
    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
}

# The explicit target: None, a platform name or an AbstractDevice. A jit-cache-sensitive
# context, so a function traced for one target is re-traced for another.
_OVERRIDE = jax.make_user_context(default_value=None)

Target = str | jax.Device | AbstractDevice


def _platform_name(platform: str) -> str:
    return _PLATFORM_ALIASES.get(platform.lower(), platform.lower())


def _as_abstract(device: jax.Device | AbstractDevice) -> AbstractDevice:
    if isinstance(device, AbstractDevice):
        return device
    if device.platform == "tpu":
        cores = getattr(device, "num_cores", None)
    else:
        cores = getattr(device, "core_count", None) if device.platform == "gpu" else None
    return AbstractDevice(device_kind=device.device_kind, num_cores=cores, platform=device.platform)


def _validate(target: Target) -> str | AbstractDevice:
    """A platform name (normalised) or an AbstractDevice; ValueError naming what is accepted."""
    if isinstance(target, str):
        name = _platform_name(target)
        if name not in PLATFORMS:
            raise ValueError(
                f"compile_target: target must be one of {list(PLATFORMS)}, a jax.Device or a "
                f"jax.sharding.AbstractDevice; got {target!r}"
            )
        return name
    if isinstance(target, (jax.Device, AbstractDevice)):
        device = _as_abstract(target)
        if _platform_name(device.platform) not in PLATFORMS:
            raise ValueError(
                f"compile_target: the device's platform must be one of {list(PLATFORMS)}; "
                f"got {device.platform!r}"
            )
        return device
    raise ValueError(
        f"compile_target: target must be one of {list(PLATFORMS)}, a jax.Device or a "
        f"jax.sharding.AbstractDevice; got {type(target).__name__} {target!r}"
    )


@contextlib.contextmanager
def compile_target(target: Target) -> Iterator[None]:
    """Kernels traced and lowered inside compile for ``target`` (see the module docstring).

    ``target``: ``"cpu"``, ``"gpu"`` (or ``"cuda"``, ``"rocm"``), ``"tpu"``, a ``jax.Device``
    (e.g. one of :func:`tpu_topology_devices`) or a ``jax.sharding.AbstractDevice``. A device
    also becomes the device of the current abstract mesh when that has none (an empty mesh
    stays empty: no sharding changes), so Pallas's Mosaic/Triton lowerings see the chip. A
    device that contradicts the current mesh's device raises ValueError.
    """
    chosen = _validate(target)
    if isinstance(chosen, str):
        with _OVERRIDE(chosen):
            yield
        return
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.abstract_device is not None and mesh.abstract_device != chosen:
        raise ValueError(
            f"compile_target({chosen}) contradicts the current mesh, whose device is "
            f"{mesh.abstract_device}"
        )
    with _OVERRIDE(chosen):
        if mesh.abstract_device is None:
            as_mesh = (
                AbstractMesh((), (), abstract_device=chosen)
                if mesh.empty
                else mesh.update(abstract_device=chosen)
            )
            with jax.sharding.use_abstract_mesh(as_mesh):
                yield
        else:
            yield


def _device_of(x) -> AbstractDevice | None:
    """The device kind in ``x``'s type (an input placed on / traced with a mesh), or None."""
    try:
        sharding = jax.typeof(x).sharding
    except (TypeError, AttributeError):
        return None
    mesh = getattr(sharding, "mesh", None)
    return getattr(mesh, "abstract_device", None)


def _chosen_device(arrays) -> AbstractDevice | None:
    """The device named by sources 1–3 of the module docstring, or None."""
    chosen = _OVERRIDE.value
    if chosen is not None:
        return chosen if isinstance(chosen, AbstractDevice) else None
    device = jax.sharding.get_abstract_mesh().abstract_device
    if device is not None:
        return device
    return next((d for d in map(_device_of, arrays) if d is not None), None)


def target_device(*arrays) -> AbstractDevice | None:
    """The device kernels are compiled for (module docstring, sources 1–4), given the kernel's
    input ``arrays``; None when only a platform was chosen (``compile_target("tpu")``)."""
    if isinstance(_OVERRIDE.value, str):
        return None
    device = _chosen_device(arrays)
    return device if device is not None else _as_abstract(jax.devices()[0])


def target_platform(*arrays) -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"``: the platform kernels are compiled for (module
    docstring), given the kernel's input ``arrays``."""
    chosen = _OVERRIDE.value
    if isinstance(chosen, str):
        return chosen
    device = _chosen_device(arrays)
    return _platform_name(device.platform if device is not None else jax.default_backend())


# ----------------------------------------------------------------------------- start-up


def _attached(kind: str) -> bool | None:
    """Whether a TPU chip (``kind="tpu"``) or a TPU chip or NVIDIA GPU (``"any"``) is attached;
    None when that cannot be told. Uses the PCI / device-node checks JAX itself makes before
    probing for a TPU."""
    try:
        from jax._src import hardware_utils
    except ImportError:  # pragma: no cover - a JAX without the module
        return None
    try:
        tpu = hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
        return tpu if kind == "tpu" else tpu or hardware_utils.has_visible_nvidia_gpu()
    except (AttributeError, OSError):  # pragma: no cover
        return None


def _attached_accelerator() -> bool | None:
    """Whether a TPU chip or an NVIDIA GPU is attached (None: cannot tell)."""
    return _attached("any")


def choose_platform(default: str | None = None) -> str | None:
    """Sets the JAX platform of this process (and of the processes it starts) unless the user
    chose one, before JAX starts its backends; returns the platform list in force.

    An explicit ``JAX_PLATFORMS`` (also ``""``: let JAX choose) is kept. Otherwise ``default``
    is used when given, else ``"cpu"`` when no TPU or GPU is attached — so JAX does not probe
    for a TPU that is not there — and JAX's own choice (None) where one is. Call it before any
    JAX computation; afterwards the platform cannot change and this only reports it.
    """
    if "JAX_PLATFORMS" in os.environ:
        return os.environ["JAX_PLATFORMS"] or None
    if default is None and _attached_accelerator() is False:
        default = "cpu"
    if default is not None:
        os.environ["JAX_PLATFORMS"] = default
        if jax.config.jax_platforms is None:
            try:
                jax.config.update("jax_platforms", default)
            except RuntimeError:  # backends already started: nothing to change any more
                pass
    return jax.config.jax_platforms


# ----------------------------------------------------------------------------- TPU topologies


def _topology_error(name: object, why: str) -> ValueError:
    return ValueError(f"TPU topology {name!r}: {why}; accepted forms: {TOPOLOGY_FORMS}")


@functools.cache
def _topology(name: str) -> tuple[jax.Device, ...]:
    if not (m := _TOPOLOGY_NAME.match(name)):
        raise _topology_error(name, "not a topology name")
    dims = tuple(int(d) for d in m.group(2).split("x"))
    if 0 in dims:
        raise _topology_error(name, "every axis needs at least one chip")
    try:
        import libtpu  # noqa: F401  (only to give a clear error when it is missing)
    except ImportError as err:
        raise RuntimeError(
            "TPU topologies need libtpu: pip install -e '.[tpu]' (or the dev extra)"
        ) from err
    if _attached("tpu") is False:
        for key, value in COMPILE_ONLY_LIBTPU_ENV.items():
            os.environ.setdefault(key, value)
    kwargs = {}
    if min(dims[:2]) == 1:  # fewer chips than libtpu's default host (2x2x1): one host
        kwargs["chips_per_host_bounds"] = (*dims, 1, 1)[:3]
    from jax.experimental import topologies

    try:
        desc = topologies.get_topology_desc(topology_name=name, platform="tpu", **kwargs)
    except jax.errors.JaxRuntimeError as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _topology_error(name, f"libtpu rejected it ({why})") from err
    return tuple(desc.devices)


def tpu_topology_devices(name: str) -> list[jax.Device]:
    """The compile-only devices of the TPU slice ``name`` (e.g. ``"v5e:2x2"`` → 4 devices of
    kind ``"TPU v5 lite"``), on any host with libtpu installed (module docstring).

    Raises ValueError naming the accepted forms (:data:`TOPOLOGY_FORMS`) for a name that is
    malformed or that libtpu does not know, RuntimeError when libtpu is not installed.
    """
    if not isinstance(name, str):
        raise _topology_error(name, f"a topology name is a str, not {type(name).__name__}")
    return list(_topology(name.strip()))
