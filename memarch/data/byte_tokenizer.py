"""Byte-level tokenizer: no vocabulary file, every UTF-8 text round-trips.

Ids: ``0`` = padding, ``1`` = beginning of document, ``2 + b`` = byte ``b``; 258 ids in all.
"""

from __future__ import annotations

import numpy as np

PAD_ID = 0
BOS_ID = 1
OFFSET = 2
VOCAB_SIZE = 256 + OFFSET


def encode(text: str | bytes, *, bos: bool = True) -> np.ndarray:
    """``int32[n]`` ids of ``text`` (UTF-8 bytes + 2), preceded by ``BOS_ID`` if ``bos``."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    ids = np.frombuffer(data, dtype=np.uint8).astype(np.int32) + OFFSET
    return np.concatenate([[BOS_ID], ids]).astype(np.int32) if bos else ids


def decode(ids) -> str:
    """The text of ``ids`` (padding and BOS dropped; invalid UTF-8 replaced)."""
    ids = np.asarray(ids)
    data = (ids[ids >= OFFSET] - OFFSET).astype(np.uint8).tobytes()
    return data.decode("utf-8", errors="replace")


__all__ = ["BOS_ID", "OFFSET", "PAD_ID", "VOCAB_SIZE", "decode", "encode"]
