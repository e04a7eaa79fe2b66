"""Verified checkpoints with orbax ``CheckpointManager``: the train state plus a signed JSON
record.

Each checkpoint ``<dir>/<step>/`` holds two items:

* ``state``: the train state pytree (parameters, optimiser state, step, RNG key data);
  restored onto the *current* mesh from abstract arrays carrying the wanted shardings, so a
  checkpoint saved under one mesh shape restores under another;
* ``meta``: JSON with the step, the resolved config and the data position, signed with one
  content checksum per state array and one of the record (:mod:`memarch.train.integrity`).
  Training batches are random-access (``dataset[step]`` is a pure function of config and
  step), so the iterator state is the step itself: ``{"kind": "random_access",
  "next_step": step}``.

**Saving.** Saves are asynchronous (the arrays are copied off the device, then written by a
background thread). orbax writes each checkpoint into a temporary directory and renames it
when complete, so a run killed mid-save leaves only a temporary directory, which
:func:`checkpoint_steps` ignores and the next manager removes. On an object store
(``gs://``), which cannot rename, orbax writes into ``<step>/`` and marks it complete with
``commit_success.txt`` last; :func:`checkpoint_steps` counts only completed steps either way.
The directory may be a local folder or a URL (``etils.epath``,
:func:`memarch.train.workdir.as_path`). A finished save is read back
and verified (checksums and finiteness) at the next save or at :meth:`Checkpointer.wait`;
only then does rotation delete older checkpoints: the ``keep`` newest *verified*
checkpoints stay (orbax's own ``max_to_keep`` would delete the last good checkpoint as soon
as a newer save *started*).

**Restoring.** :meth:`Checkpointer.restore` raises :class:`CheckpointError` (a
``ValueError`` naming the checkpoint and the reason) for a checkpoint that cannot be read
(a truncated or missing file, missing or malformed metadata, a missing item) or whose
arrays or record no longer match their checksums or hold NaN/inf;
:meth:`Checkpointer.restore_newest` falls back to the newest checkpoint that verifies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from memarch.train.config import CheckpointConfig
from memarch.train.integrity import CHECKSUM_KEY, nonfinite_arrays, sign_record, verify_record
from memarch.train.workdir import PathLike, as_path

REJECTED_SUFFIX = ".rejected"  # a checkpoint set aside by a resume that fell back past it


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or fails verification (``step``, ``directory`` and
    ``reason`` name which and why)."""

    def __init__(self, step: int, directory: PathLike, reason: str):
        self.step, self.directory, self.reason = step, as_path(directory), reason
        super().__init__(f"checkpoint {step} in {directory}: {reason}")


def checkpoint_steps(directory: PathLike) -> list[int]:
    """Steps of the complete checkpoints in ``directory``, ascending: folders named by a step,
    renamed from their temporary name (local) or holding orbax's commit marker (``gs://``);
    reads the directory only (no orbax manager, nothing written)."""
    path = as_path(directory)
    if not path.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in path.iterdir()
        if p.name.isdigit() and p.is_dir() and ocp.path.step.is_path_finalized(p)
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _problems_text(problems: list[str], show: int = 3) -> str:
    more = f" (and {len(problems) - show} more)" if len(problems) > show else ""
    return "; ".join(problems[:show]) + more


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of ``tree``'s leaves with the given shardings (a restore target)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _abstract_of(state: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


@dataclasses.dataclass
class Restored:
    """What :meth:`Checkpointer.restore_newest` found: the checkpoint it restored and the
    newer ones it had to pass over (each a :class:`CheckpointError` with the reason)."""

    step: int
    state: Any
    meta: dict
    rejected: list[CheckpointError]


class Checkpointer:
    """The checkpoints of one run in ``directory``: signed saves, verified restores, and
    rotation that keeps the ``cfg.keep`` newest verified checkpoints."""

    def __init__(
        self,
        directory: PathLike,
        cfg: CheckpointConfig,
        *,
        log: Callable[[str], None] | None = None,
        read_only: bool = False,
    ):
        self.directory = as_path(directory)
        self.keep = cfg.keep
        self.log = log  # where a save that fails its read-back is reported
        self.read_only = read_only  # restore only: no directory created, no temp dir removed
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=None,  # rotation is ours: only after the newer save verified
                enable_async_checkpointing=cfg.async_save and not read_only,
                cleanup_tmp_directories=not read_only,  # a running save's temp dir survives
                create=not read_only,
                read_only=read_only,
            ),
            item_names=("state", "meta"),
        )
        self.verified: set[int] = set()  # steps read back (or restored) and verified
        self.failed: dict[int, str] = {}  # steps whose read-back failed: the reason
        self._unchecked: list[tuple[int, Any]] = []  # (step, restore target) being written

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Starts saving ``state`` and ``meta`` (signed with the state's checksums) as
        checkpoint ``step``; returns before the write finishes when saves are asynchronous.
        Earlier saves are verified (and old checkpoints rotated out) first."""
        if self.read_only:
            raise ValueError(f"checkpoints in {self.directory} were opened read-only")
        self.wait()
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave(sign_record(meta, state)),
            ),
            force=True,
        )
        self._unchecked.append((step, _abstract_of(state)))

    def latest_step(self) -> int | None:
        """The newest complete checkpoint (verified or not), or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        return checkpoint_steps(self.directory)

    def newest_verified(self) -> int | None:
        """The newest checkpoint this object saved and read back, or restored, verified."""
        steps = self.verified & set(self.all_steps())
        return max(steps) if steps else None

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """``(state, meta)`` of checkpoint ``step``, verified against its checksums and
        finite; ``abstract_state`` holds ``jax.ShapeDtypeStruct``s with the shardings to
        restore onto. Raises :class:`CheckpointError` naming the step and the reason."""
        try:
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                ),
            )
            state, meta = out["state"], out["meta"]
        except Exception as err:  # orbax/tensorstore/json raise many types for a bad file
            raise CheckpointError(
                step, self.directory, f"cannot be read ({_first_line(err)})"
            ) from err
        if not isinstance(meta, dict):
            raise CheckpointError(
                step, self.directory, "its JSON record is missing or not an object"
            )
        problems = verify_record(meta, state)
        if problems:
            raise CheckpointError(
                step, self.directory, f"fails verification: {_problems_text(problems)}"
            )
        bad = nonfinite_arrays(state)
        if bad:
            raise CheckpointError(
                step, self.directory, f"holds NaN/inf values in {_problems_text(bad)}"
            )
        self.verified.add(step)
        return state, {k: v for k, v in meta.items() if k != CHECKSUM_KEY}

    def restore_newest(self, abstract_state: Any, *, before: int | None = None) -> Restored:
        """The newest checkpoint (older than ``before``, if given) that reads and verifies,
        with the newer ones that did not; :class:`CheckpointError` listing every reason if
        none does."""
        rejected = []
        for step in reversed(self.all_steps()):
            if before is not None and step >= before:
                continue
            try:
                state, meta = self.restore(step, abstract_state)
            except CheckpointError as err:
                rejected.append(err)
                continue
            return Restored(step, state, meta, rejected)
        reasons = "; ".join(f"{e.step}: {e.reason}" for e in rejected) or "there is none"
        raise CheckpointError(
            -1 if not rejected else rejected[-1].step,
            self.directory,
            f"no checkpoint verifies ({reasons})",
        )

    def set_aside(self, step: int) -> epath.Path:
        """Renames checkpoint ``step`` to ``<step>.rejected`` (kept for inspection, no longer a
        step) and returns the new path; the process-0 copy only in a multi-host job."""
        src = self.directory / str(step)
        dst = self.directory / f"{step}{REJECTED_SUFFIX}"
        if jax.process_index() == 0:
            n = 1
            while dst.exists():
                n += 1
                dst = self.directory / f"{step}{REJECTED_SUFFIX}{n}"
            src.rename(dst)
        self.manager.reload()
        return dst

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk, reads each back and verifies
        it, then deletes checkpoints older than the ``keep`` newest verified ones. A save
        that fails verification is kept, recorded in :attr:`failed` and reported to
        :attr:`log`; it never counts as good."""
        self.manager.wait_until_finished()
        if not self._unchecked:
            return
        for step, target in self._unchecked:
            try:
                self.restore(step, target)
            except CheckpointError as err:
                self.failed[step] = err.reason
                if self.log is not None:
                    self.log(f"warning: saved {err}")
        self._unchecked.clear()
        self._rotate()

    def _rotate(self) -> None:
        kept = sorted(self.verified & set(self.all_steps()))[-self.keep :]
        if not kept:
            return
        for step in self.all_steps():
            if step < kept[0] and step not in kept:
                self.manager.delete(step)
                self.verified.discard(step)

    def close(self) -> None:
        """Verifies and rotates the pending saves (:meth:`wait`), then closes the manager."""
        try:
            self.wait()
        finally:
            self.manager.close()


__all__ = [
    "CheckpointError",
    "Checkpointer",
    "REJECTED_SUFFIX",
    "Restored",
    "abstract_like",
    "checkpoint_steps",
]
