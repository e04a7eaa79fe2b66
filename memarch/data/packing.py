"""Packed training rows over prepared shards (:mod:`memarch.data.shards`), for grain.

:class:`PreparedSplit` opens one split of a prepared directory: start-up reads ``index.json``
and the per-shard ``lengths.npy`` arrays (8 bytes per document; no record is read), and
refuses the data when the caller's tokenizer has another fingerprint than the one the
shards were written with.

:class:`PackedRows` (a grain ``RandomAccessDataSource``) packs a split into rows of ``T =
seq_len``: in epoch ``e`` the documents are taken in the permutation
``np.random.default_rng([seed, e]).permutation(D)``, each optionally preceded by BOS and/or
followed by EOS, and concatenated into one stream ``s`` of ``N`` tokens. Row ``i`` (of
``R = (N − 1) // T`` per epoch) reads ``s[i·T : (i+1)·T + 1]``::

    inputs[t]      = s[i·T + t]
    targets[t]     = s[i·T + t + 1]   if both tokens are in the same document, else IGNORE_INDEX
    segment_ids[t] = 1 + (number of document starts in s(i·T, i·T + t])   (1, 2, … per row)

all ``int32[T]``. Every token of the split is an input exactly once per epoch (but the last
``N − R·T < T + 1`` of the stream), no target crosses a document boundary, and row ``r`` of
the endless stream (epoch ``r // R``) is a pure function of ``(seed, r)``. A row is located by
binary search over the cumulative document lengths and reads only the records it overlaps.

Pods: global batch ``s`` is rows ``[s·B, (s+1)·B)``; process ``p`` of ``P`` reads rows
``s·B + p·B/P + [0, B/P)`` (:func:`process_rows`), so the global batch does not depend on the
number of processes; :func:`process_batches` builds that process's grain pipeline (worker
processes optional; the rows do not depend on their number).
"""

from __future__ import annotations

import operator
from pathlib import Path

import grain
import numpy as np
from absl import flags

from memarch.data.shards import RecordReader, read_index
from memarch.data.source import IGNORE_INDEX
from memarch.data.tokenizers import TextTokenizer


class PreparedSplit:
    """One split (``"train"`` / ``"validation"``) of a prepared directory.

    ``lengths``: ``int64[D]`` tokens per document (shard order); :meth:`read` gives document
    ``d``'s ids. ``tokenizer`` (or ``fingerprint``): the tokenizer the caller will interpret
    ids with; a mismatch with the index raises ``ValueError``.
    """

    def __init__(
        self,
        directory: str | Path,
        split: str = "train",
        *,
        tokenizer: TextTokenizer | None = None,
        fingerprint: str | None = None,
    ):
        self.directory = Path(directory)
        self.index = read_index(self.directory)
        splits = list(self.index["splits"])
        if split not in splits:
            raise ValueError(f"split must be one of {splits}; got {split!r}")
        self.split = split
        recorded = self.index["tokenizer"]
        expected = tokenizer.fingerprint if tokenizer is not None else fingerprint
        if expected is not None and expected != recorded["fingerprint"]:
            given = tokenizer.describe() if tokenizer is not None else f"fingerprint {expected}"
            raise ValueError(
                f"{self.directory} was prepared with tokenizer {recorded['class']} "
                f"({recorded['path']}, fingerprint {recorded['fingerprint'][:12]}…), not with "
                f"{given} (fingerprint {expected[:12]}…); prepare it again with this tokenizer"
            )
        self.dtype = self.index["dtype"]
        self.bos_id, self.eos_id = recorded["bos_id"], recorded["eos_id"]
        parts, self.readers = [], []
        for shard in self.index["shards"]:
            entry = shard[split]
            lengths = np.load(self.directory / entry["lengths"])
            if len(lengths) != entry["documents"]:
                raise ValueError(
                    f"{self.directory / entry['lengths']}: {len(lengths)} lengths, index says "
                    f"{entry['documents']} documents (prepare it again)"
                )
            records = self.directory / entry["records"]
            if not records.is_file() or records.stat().st_size != entry["bytes"]:
                raise ValueError(f"{records}: missing or not the size the index records")
            parts.append(lengths.astype(np.int64))
            self.readers.append(RecordReader(records, self.dtype))
        self.lengths = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self._last: tuple[int, np.ndarray] | None = None
        counts = [len(p) for p in parts]
        self.shard_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def read(self, d: int) -> np.ndarray:
        """Ids of document ``d`` (``dtype[lengths[d]]``). The last document read is kept: a
        document that ends one packed row starts the next."""
        if self._last is not None and self._last[0] == d:
            return self._last[1]
        k = int(self.shard_starts.searchsorted(d, side="right")) - 1
        ids = self.readers[k].read(d - int(self.shard_starts[k]))
        self._last = (d, ids)
        return ids

    def __getstate__(self):
        return {**self.__dict__, "_last": None}


class PackedRows:
    """Random-access packed rows (see the module docstring): ``len`` = rows per epoch;
    ``rows[r]`` for any ``r >= 0`` is row ``r % len`` of epoch ``r // len``."""

    def __init__(
        self,
        split: PreparedSplit,
        *,
        seq_len: int,
        seed: int,
        add_bos: bool = False,
        add_eos: bool = False,
    ):
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be an int >= 1; got {seq_len!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0; got {seed!r}")
        self.split = split
        self.seq_len = seq_len
        self.seed = seed
        self.bos = [split.bos_id] if add_bos else []
        self.eos = [split.eos_id] if add_eos else []
        for name, wanted, value in (("BOS", add_bos, split.bos_id), ("EOS", add_eos, split.eos_id)):
            if wanted and value is None:
                raise ValueError(
                    f"add_{name.lower()}=True but the tokenizer of {split.directory} has no "
                    f"{name} id (prepare with an explicit --{name.lower()}-id)"
                )
        self.doc_lengths = split.lengths + len(self.bos) + len(self.eos)
        self.num_tokens = int(self.doc_lengths.sum())
        self.num_rows = (self.num_tokens - 1) // seq_len
        if self.num_rows < 1:
            raise ValueError(
                f"the {split.split} split of {split.directory} has {self.num_tokens} tokens, "
                f"fewer than seq_len + 1 = {seq_len + 1}"
            )
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(order int64[D], starts int64[D+1])``: the documents of epoch ``epoch`` and their
        offsets in its stream."""
        if self._epoch is None or self._epoch[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.doc_lengths))
            starts = np.concatenate([[0], np.cumsum(self.doc_lengths[order])]).astype(np.int64)
            self._epoch = (epoch, order, starts)
        return self._epoch[1], self._epoch[2]

    def __getstate__(self):
        return {**self.__dict__, "_epoch": None}

    def __len__(self) -> int:
        return self.num_rows

    def _fill(self, out: np.ndarray, d: int, a: int, b: int) -> None:
        """Writes tokens ``[a, b)`` of document ``d`` (with its BOS/EOS) into ``out``
        (``len(out) == b - a``)."""
        nb, n = len(self.bos), int(self.split.lengths[d])
        k = 0
        if a < nb:
            out[0] = self.bos[0]
            k = 1
        lo, hi = max(a - nb, 0), min(b - nb, n)
        if lo < hi:
            out[k : k + hi - lo] = self.split.read(d)[lo:hi]
            k += hi - lo
        if k < len(out):  # the EOS
            out[k] = self.eos[0]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = operator.index(index)
        if index < 0:
            raise IndexError(f"row index must be >= 0; got {index}")
        epoch, row = divmod(index, self.num_rows)
        order, starts = self.epoch_order(epoch)
        T = self.seq_len
        lo, hi = row * T, (row + 1) * T + 1
        j = int(starts.searchsorted(lo, side="right")) - 1
        tokens = np.empty(T + 1, np.int32)
        segments = np.empty(T + 1, np.int32)
        pos, seg = lo, 0
        while pos < hi:
            start, stop = int(starts[j]), int(starts[j + 1])
            if stop > start:
                end = min(hi, stop)
                seg += 1
                self._fill(tokens[pos - lo : end - lo], int(order[j]), pos - start, end - start)
                segments[pos - lo : end - lo] = seg
                pos = end
            j += 1
        same = segments[1:] == segments[:-1]
        return {
            "inputs": tokens[:-1],
            "targets": np.where(same, tokens[1:], np.int32(IGNORE_INDEX)),
            "segment_ids": segments[:-1],
        }


def process_rows(
    step: int, global_batch_size: int, process_index: int, process_count: int
) -> range:
    """Global row indices that process ``process_index`` of ``process_count`` reads at training
    step ``step``: ``step·B + p·B/P + [0, B/P)`` (``B`` divisible by ``P``)."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index must be in [0, process_count={process_count}); got {process_index}"
        )
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be >= 1 and divisible by "
            f"process_count={process_count}"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    b = global_batch_size // process_count
    first = step * global_batch_size + process_index * b
    return range(first, first + b)


class ProcessRows:
    """This process's rows of the first ``num_steps`` global batches, in order: element ``k``
    is row ``process_rows(k // b, B, p, P)[k % b]`` of ``rows`` (``b = B/P``)."""

    def __init__(
        self,
        rows: PackedRows,
        *,
        global_batch_size: int,
        process_index: int,
        process_count: int,
        num_steps: int,
    ):
        process_rows(0, global_batch_size, process_index, process_count)  # validates
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1; got {num_steps}")
        self.rows = rows
        self.global_batch_size = global_batch_size
        self.process_index = process_index
        self.process_count = process_count
        self.local_batch_size = global_batch_size // process_count
        self.num_steps = num_steps

    def __len__(self) -> int:
        return self.num_steps * self.local_batch_size

    def __getitem__(self, k: int) -> dict[str, np.ndarray]:
        k = operator.index(k)
        if not 0 <= k < len(self):
            raise IndexError(f"element index must be in [0, {len(self)}); got {k}")
        step, r = divmod(k, self.local_batch_size)
        global_row = step * self.global_batch_size + self.process_index * self.local_batch_size
        return self.rows[global_row + r]


def process_batches(
    rows: PackedRows,
    *,
    global_batch_size: int,
    process_index: int,
    process_count: int,
    num_steps: int,
    start_step: int = 0,
    worker_count: int = 0,
) -> grain.IterDataset:
    """This process's batches for steps ``start_step … num_steps − 1``
    (``{"inputs", "targets", "segment_ids"}: int32[B/P, T]`` each), read by ``worker_count``
    grain worker processes (0: in this process). Resuming at ``start_step`` yields exactly the
    batches an uninterrupted run sees from that step on."""
    if not 0 <= start_step < num_steps:
        raise ValueError(f"start_step must be in [0, num_steps={num_steps}); got {start_step}")
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0; got {worker_count}")
    source = ProcessRows(
        rows,
        global_batch_size=global_batch_size,
        process_index=process_index,
        process_count=process_count,
        num_steps=num_steps,
    )
    ds = grain.MapDataset.source(source).batch(source.local_batch_size, drop_remainder=True)
    return with_workers(ds[start_step:].to_iter_dataset(), worker_count)


def with_workers(it: grain.IterDataset, worker_count: int) -> grain.IterDataset:
    """``it`` read by ``worker_count`` grain worker processes (``mp_prefetch``; 0: ``it``
    itself). The elements and their order do not depend on ``worker_count``."""
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0; got {worker_count}")
    if not worker_count:
        return it
    # grain's workers read absl flags (profiling); outside an absl app nobody parses them,
    # so take their defaults.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))


__all__ = [
    "PackedRows",
    "PreparedSplit",
    "ProcessRows",
    "process_batches",
    "process_rows",
    "with_workers",
]
