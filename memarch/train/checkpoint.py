"""Checkpoints with orbax ``CheckpointManager``: the train state plus a JSON record.

Each checkpoint ``<dir>/<step>/`` holds two items:

* ``state``: the train state pytree (parameters, optimiser state, step, RNG key data);
  restored onto the *current* mesh from abstract arrays carrying the wanted shardings, so a
  checkpoint saved under one mesh shape restores under another;
* ``meta``: JSON with the step, the resolved config and the data position. Training batches
  are random-access (``dataset[step]`` is a pure function of config and step), so the
  iterator state is the step itself: ``{"kind": "random_access", "next_step": step}``.

Saves are asynchronous (the arrays are copied off the device, then written by a background
thread). orbax writes each checkpoint into a temporary directory and renames it when
complete, so a run killed mid-save leaves only a temporary directory, which
:meth:`Checkpointer.latest_step` ignores and the next manager removes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from memarch.train.config import CheckpointConfig


class Checkpointer:
    """Keeps the last ``cfg.keep`` checkpoints of one run in ``directory``."""

    def __init__(self, directory: str | Path, cfg: CheckpointConfig):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=cfg.keep,
                enable_async_checkpointing=cfg.async_save,
                cleanup_tmp_directories=True,
                create=True,
            ),
            item_names=("state", "meta"),
        )

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Starts saving ``state`` and ``meta`` as checkpoint ``step`` (returns before the
        write finishes when saves are asynchronous)."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """``(state, meta)`` of checkpoint ``step``; ``abstract_state`` holds
        ``jax.ShapeDtypeStruct``s with the shardings to restore onto."""
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return out["state"], out["meta"]

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of ``tree``'s leaves with the given shardings (a restore target)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


__all__ = ["Checkpointer", "abstract_like"]
