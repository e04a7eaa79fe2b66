"""Pallas kernels for :mod:`memarch.ops`, installed as ``memarch.kernels``.

The folder sits at the top of the repository but is mapped to ``memarch.kernels`` in
pyproject.toml, so its import name cannot collide with the PyPI distribution ``kernels``.

The kernels compile for the device they target, not for the host that traces them:
:func:`compile_target` chooses it explicitly (otherwise the current mesh's device, the inputs'
sharding or JAX's default backend decide), and :func:`tpu_topology_devices` gives the
compile-only devices of a TPU slice on any host with libtpu, and :func:`choose_platform` runs
JAX on the CPU where no accelerator is attached (see ``_target.py``).
"""

from memarch.kernels._target import choose_platform, compile_target, tpu_topology_devices

__all__ = ["choose_platform", "compile_target", "tpu_topology_devices"]
