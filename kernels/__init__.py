"""Pallas kernels for :mod:`memarch.ops`, installed as ``memarch.kernels``.

The folder sits at the top of the repository but is mapped to ``memarch.kernels`` in
pyproject.toml, so its import name cannot collide with the PyPI distribution ``kernels``.
"""
