"""The associative-memory engine (Titans / Miras): a memory is four choices.

``structure`` (linear matrix | MLP) × ``bias`` (dot | l2 | lp | huber | huber_norm) ×
``retention`` (none | decay | lq | kl_softmax | elastic_net) × ``rule`` (gd | momentum),
validated by :class:`MemoryConfig`, compiled to a :class:`MemorySpec` by :func:`make_spec` and
run by :func:`memory_forward` (chunked parallel form, exact token-by-token form, decode).
Each axis is a :class:`memarch.registry.Registry` of small functions (structures.py, biases.py,
retention.py, rules.py); :class:`MemoryGates` (write_gates.py) computes the write gates.
"""

from memarch.memory.biases import BIASES, make_bias
from memarch.memory.config import MemoryConfig
from memarch.memory.engine import (
    MemorySpec,
    MemoryState,
    WriteGates,
    initial_state,
    make_spec,
    memory_forward,
    memory_read,
)
from memarch.memory.retention import RETENTIONS, make_retention
from memarch.memory.rules import RULES
from memarch.memory.structures import STRUCTURES, make_structure
from memarch.memory.write_gates import MemoryGates

__all__ = [
    "BIASES",
    "RETENTIONS",
    "RULES",
    "STRUCTURES",
    "MemoryConfig",
    "MemoryGates",
    "MemorySpec",
    "MemoryState",
    "WriteGates",
    "initial_state",
    "make_bias",
    "make_retention",
    "make_spec",
    "make_structure",
    "memory_forward",
    "memory_read",
]
