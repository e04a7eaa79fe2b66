"""Reading a compiled executable's HLO text: which collectives the partitioner inserted.

Each collective appears in the optimised HLO as an instruction ``%x = <shape> <op>(operands)``;
on TPU most are asynchronous pairs ``<op>-start`` / ``<op>-done``, counted once (at the start).
"""

from __future__ import annotations

import re

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_OP = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")


def collective_counts(hlo_text: str) -> dict[str, int]:
    """``{op: count}`` over :data:`COLLECTIVES` (zeros included) in an HLO module's text."""
    counts = dict.fromkeys(COLLECTIVES, 0)
    for line in hlo_text.splitlines():
        if "=" not in line:
            continue
        match = _OP.search(line.split("=", 1)[1])
        if match:
            counts[match.group(1)] += 1
    return counts


__all__ = ["COLLECTIVES", "collective_counts"]
