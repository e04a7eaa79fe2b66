"""Layer patterns: which mixer sits in each layer of a hybrid stack.

A pattern is either a string of one-letter mixer names (``"LLLA" * 2``; letters come from the
registry, see ``memarch.mixers.letters()``), a comma-separated string of mixer names
(``"gla,gla,attention"``), or a list of names. Alternatively ``ratio`` r linear layers per
attention layer, placed by a rule, over ``num_layers`` layers.
"""

from __future__ import annotations

from collections.abc import Sequence

from memarch import mixers

PLACEMENTS = ("last", "first", "middle")


def parse_pattern(pattern: str | Sequence[str]) -> list[str]:
    """Returns the list of mixer names a pattern denotes; raises ValueError if malformed."""
    if isinstance(pattern, str):
        if not pattern.strip():
            raise ValueError("layer pattern is empty; give letters like 'LLLA' or mixer names")
        if "," in pattern:
            names = [p.strip() for p in pattern.split(",")]
        else:
            table = mixers.letters()
            bad = sorted({c for c in pattern if c not in table})
            if bad:
                raise ValueError(
                    f"layer pattern {pattern!r} has unknown letters {bad}; accepted letters: "
                    + ", ".join(f"{c}={n}" for c, n in sorted(table.items()))
                    + " (or a comma-separated list of mixer names)"
                )
            names = [table[c] for c in pattern]
    else:
        names = list(pattern)
        if not names:
            raise ValueError("layer pattern is empty; give at least one mixer name")
    known = mixers.available()
    for n in names:
        if n not in known:
            raise ValueError(f"layer pattern names unknown mixer {n!r}; available: {known}")
    return names


def ratio_pattern(
    num_layers: int,
    ratio: int,
    *,
    linear: str = "gated_deltanet",
    attention: str = "attention",
    placement: str = "last",
) -> list[str]:
    """``ratio`` linear layers per attention layer, e.g. ratio 3 over 8 layers, placement
    ``last`` -> ``[lin, lin, lin, attn] * 2``. Placement puts the attention layer ``last``,
    ``first`` or in the ``middle`` of each group of ``ratio + 1`` layers; ratio 0 = all
    attention."""
    if num_layers <= 0:
        raise ValueError(f"num_layers must be a positive int; got {num_layers}")
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0 (linear layers per attention layer); got {ratio}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {list(PLACEMENTS)}; got {placement!r}")
    group = ratio + 1
    slot = {"last": ratio, "first": 0, "middle": ratio // 2}[placement]
    names = [attention if i % group == slot else linear for i in range(num_layers)]
    return parse_pattern(names)
