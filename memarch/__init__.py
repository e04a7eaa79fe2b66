"""memarch: memory in sequence models, in JAX.

Subpackages: ``ops`` (recurrences: naive / chunk / step), ``layers``, ``mixers`` (registry and
protocol), ``models`` (hybrid LMs, generation), ``data``, ``train``, ``eval``.
"""

__version__ = "0.1.0"
