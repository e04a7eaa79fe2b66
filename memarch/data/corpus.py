"""Where a config finds its local text corpus (no imports beyond the standard library, so a
config file can use it without loading TFDS)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MEMARCH_TEXT_FILE"
SHARED_CORPUS = Path("shared") / "data" / "tinyshakespeare.txt"


def find_corpus(start: str | Path) -> str:
    """``$MEMARCH_TEXT_FILE`` if set, else the first ``shared/data/tinyshakespeare.txt`` found
    in a parent directory of ``start`` (a config passes its own ``__file__``), else ``""``
    (then ``data.text_file`` must be given)."""
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    for parent in Path(start).resolve().parents:
        candidate = parent / SHARED_CORPUS
        if candidate.is_file():
            return str(candidate)
    return ""
