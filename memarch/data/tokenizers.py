"""Text tokenizers loaded from local paths, behind one small interface.

Three kinds, all from local files (nothing is downloaded; a tokenizer is a path):

* ``"byte"``: memarch's byte-level tokenizer (:mod:`memarch.data.byte_tokenizer`; 258 ids,
  PAD 0, BOS 1, byte ``b`` → ``b + 2``, no EOS).
* a Hugging Face ``tokenizers`` file (``tokenizer.json``) or a directory as ``transformers``
  saves one (``tokenizer.json`` plus ``special_tokens_map.json`` / ``tokenizer_config.json``,
  which name the BOS/EOS/PAD tokens).
* a SentencePiece model (``*.model``, or a directory holding ``tokenizer.model``).

Every tokenizer encodes *without* special tokens (``encode(text) → list[int]``); where BOS/EOS
go is the packer's decision (:mod:`memarch.data.packing`). The special ids are explicit:
read from the tokenizer's files, overridable by the caller (an int, or ``None`` to say "this
tokenizer has none"), and :meth:`TextTokenizer.special_id` raises a ``ValueError`` when a
needed one is absent.

``fingerprint`` = sha256 over (the class name, the bytes of the tokenizer file, the special
ids): shards prepared with one tokenizer are refused by a loader given another.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import sentencepiece as spm
from tokenizers import Tokenizer as HFRustTokenizer

from memarch.data import byte_tokenizer


class _FromFiles:
    """Marker type of :data:`FROM_FILES`."""

    def __repr__(self) -> str:
        return "FROM_FILES"


FROM_FILES: Final = _FromFiles()  # default of a special id: read it from the tokenizer's files
SPECIAL_NAMES = ("bos", "eos", "pad")
SpecialId = int | None | _FromFiles


def _check_special(name: str, value: int | None, vocab_size: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"tokenizer {name}_id must be an int or None; got {value!r}")
    if not 0 <= int(value) < vocab_size:
        raise ValueError(
            f"tokenizer {name}_id must be in [0, vocab_size={vocab_size}); got {value}"
        )
    return int(value)


class TextTokenizer(ABC):
    """The interface every tokenizer implements (see the module docstring).

    Attributes: ``path`` (the file the ids come from, ``None`` for ``"byte"``),
    ``vocab_size`` (ids are in ``[0, vocab_size)``), ``bos_id`` / ``eos_id`` / ``pad_id``
    (``int`` or ``None``) and ``fingerprint`` (hex sha256).
    """

    path: Path | None
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None

    def _set_specials(self, found: dict[str, int | None], given: dict[str, SpecialId]) -> None:
        for name in SPECIAL_NAMES:
            value = found[name] if isinstance(given[name], _FromFiles) else given[name]
            setattr(self, f"{name}_id", _check_special(name, value, self.vocab_size))

    def _file_bytes(self) -> bytes:
        return self.path.read_bytes() if self.path is not None else b""

    @property
    def fingerprint(self) -> str:
        """Hex sha256 of (class name, tokenizer file bytes, BOS/EOS/PAD ids)."""
        h = hashlib.sha256(type(self).__name__.encode())
        h.update(hashlib.sha256(self._file_bytes()).digest())
        h.update(json.dumps([self.bos_id, self.eos_id, self.pad_id]).encode())
        return h.hexdigest()

    def special_id(self, name: str) -> int:
        """The id of special token ``name`` (``"bos"``, ``"eos"`` or ``"pad"``); ``ValueError``
        when this tokenizer has none (then give one explicitly, e.g. ``eos_id=…``)."""
        if name not in SPECIAL_NAMES:
            raise ValueError(
                f"special token name must be one of {list(SPECIAL_NAMES)}; got {name!r}"
            )
        value = getattr(self, f"{name}_id")
        if value is None:
            raise ValueError(
                f"{self.describe()} has no {name.upper()} token; pass {name}_id=<id> explicitly "
                f"or do not ask for {name.upper()}"
            )
        return value

    def describe(self) -> str:
        """``"ClassName(path)"``, for error messages."""
        return f"{type(self).__name__}({str(self.path) if self.path else ''})"

    def info(self) -> dict:
        """What a prepared index records about the tokenizer (JSON-ready)."""
        return {
            "class": type(self).__name__,
            "path": str(self.path) if self.path else None,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "fingerprint": self.fingerprint,
        }

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``, no special tokens added."""
        return self.encode_batch([text])[0]

    @abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each text."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``."""


class ByteTokenizer(TextTokenizer):
    """:mod:`memarch.data.byte_tokenizer` behind :class:`TextTokenizer` (258 ids; no EOS)."""

    def __init__(
        self,
        *,
        bos_id: SpecialId = FROM_FILES,
        eos_id: SpecialId = FROM_FILES,
        pad_id: SpecialId = FROM_FILES,
    ):
        self.path = None
        self.vocab_size = byte_tokenizer.VOCAB_SIZE
        found = {"bos": byte_tokenizer.BOS_ID, "eos": None, "pad": byte_tokenizer.PAD_ID}
        self._set_specials(found, {"bos": bos_id, "eos": eos_id, "pad": pad_id})

    def _file_bytes(self) -> bytes:
        return b"memarch byte tokenizer: id = byte + 2"

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [byte_tokenizer.encode(t, bos=False).tolist() for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return byte_tokenizer.decode(np.asarray(ids, np.int64))


def _token_content(entry) -> str | None:
    """A special token as ``special_tokens_map.json`` / ``tokenizer_config.json`` write it:
    a string or ``{"content": str, …}``."""
    if isinstance(entry, dict):
        entry = entry.get("content")
    return entry if isinstance(entry, str) else None


class HFTokenizer(TextTokenizer):
    """A Hugging Face ``tokenizers`` tokenizer: ``path`` is a ``tokenizer.json`` file or a
    directory holding one (BOS/EOS/PAD read from ``special_tokens_map.json``, else
    ``tokenizer_config.json``, in that directory)."""

    def __init__(
        self,
        path: str | Path,
        *,
        bos_id: SpecialId = FROM_FILES,
        eos_id: SpecialId = FROM_FILES,
        pad_id: SpecialId = FROM_FILES,
    ):
        path = Path(path)
        directory = path if path.is_dir() else path.parent
        self.path = path / "tokenizer.json" if path.is_dir() else path
        if not self.path.is_file():
            raise ValueError(f"tokenizer path {str(self.path)!r} does not exist")
        self._tok = HFRustTokenizer.from_file(str(self.path))
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        names: dict[str, str | None] = {"bos": None, "eos": None, "pad": None}
        for meta in ("tokenizer_config.json", "special_tokens_map.json"):  # the latter wins
            if (directory / meta).is_file() and path.is_dir():
                entries = json.loads((directory / meta).read_text(encoding="utf-8"))
                for name in SPECIAL_NAMES:
                    content = _token_content(entries.get(f"{name}_token"))
                    names[name] = content if content is not None else names[name]
        found = {}
        for name, content in names.items():
            found[name] = None if content is None else self._tok.token_to_id(content)
            if content is not None and found[name] is None:
                raise ValueError(
                    f"{name}_token {content!r} of {directory} is not in the vocabulary of "
                    f"{self.path}"
                )
        self._set_specials(found, {"bos": bos_id, "eos": eos_id, "pad": pad_id})

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


class SentencePieceTokenizer(TextTokenizer):
    """A SentencePiece model (``*.model``; a directory holding ``tokenizer.model`` also works).
    BOS/EOS/PAD are the model's own (SentencePiece reports −1 for an absent one → ``None``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        bos_id: SpecialId = FROM_FILES,
        eos_id: SpecialId = FROM_FILES,
        pad_id: SpecialId = FROM_FILES,
    ):
        path = Path(path)
        self.path = path / "tokenizer.model" if path.is_dir() else path
        if not self.path.is_file():
            raise ValueError(f"tokenizer path {str(self.path)!r} does not exist")
        self._sp = spm.SentencePieceProcessor(model_proto=self.path.read_bytes())
        self.vocab_size = int(self._sp.get_piece_size())
        found = {
            "bos": self._sp.bos_id(),
            "eos": self._sp.eos_id(),
            "pad": self._sp.pad_id(),
        }
        found = {k: (None if v < 0 else int(v)) for k, v in found.items()}
        self._set_specials(found, {"bos": bos_id, "eos": eos_id, "pad": pad_id})

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self._sp.encode(list(texts), out_type=int)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])


KINDS = (
    "byte",
    "a tokenizer.json file",
    "a directory with tokenizer.json or tokenizer.model",
    "a SentencePiece *.model file",
)


def load_tokenizer(
    spec: str | Path,
    *,
    bos_id: SpecialId = FROM_FILES,
    eos_id: SpecialId = FROM_FILES,
    pad_id: SpecialId = FROM_FILES,
) -> TextTokenizer:
    """The tokenizer named by ``spec``: ``"byte"``, a ``*.json`` file (Hugging Face), a
    ``*.model`` file (SentencePiece), or a directory holding ``tokenizer.json`` (Hugging Face)
    or ``tokenizer.model`` (SentencePiece). ``ValueError`` for a missing path or another kind.
    """
    specials = {"bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id}
    if str(spec) == "byte":
        return ByteTokenizer(**specials)
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"tokenizer path {str(path)!r} does not exist")
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return HFTokenizer(path, **specials)
        if (path / "tokenizer.model").is_file():
            return SentencePieceTokenizer(path, **specials)
    elif path.suffix == ".json":
        return HFTokenizer(path, **specials)
    elif path.suffix == ".model":
        return SentencePieceTokenizer(path, **specials)
    raise ValueError(f"tokenizer {str(path)!r} is none of the accepted kinds: {', '.join(KINDS)}")


def padded_vocab_size(n: int, multiple: int = 128) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (the embedding's row count; the padding
    rows are never targets)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"vocab size must be an int >= 1; got {n!r}")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be an int >= 1; got {multiple!r}")
    return -(-n // multiple) * multiple


def check_vocab(model_vocab_size: int, tokenizer: TextTokenizer) -> None:
    """``ValueError`` naming both numbers when ``tokenizer`` has more ids than the model's
    embedding has rows."""
    if tokenizer.vocab_size > model_vocab_size:
        raise ValueError(
            f"model.vocab_size={model_vocab_size} is smaller than the vocabulary of "
            f"{tokenizer.describe()} ({tokenizer.vocab_size} ids); use a model vocab_size >= "
            f"{tokenizer.vocab_size}, e.g. padded_vocab_size({tokenizer.vocab_size}) = "
            f"{padded_vocab_size(tokenizer.vocab_size)}"
        )


__all__ = [
    "FROM_FILES",
    "ByteTokenizer",
    "HFTokenizer",
    "SentencePieceTokenizer",
    "TextTokenizer",
    "check_vocab",
    "load_tokenizer",
    "padded_vocab_size",
]
