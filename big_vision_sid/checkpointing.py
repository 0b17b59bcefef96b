"""Atomic, resumable checkpoints of the train state with orbax.

Orbax writes each step into a temporary directory and renames it when the
save is complete, so a run killed mid-save leaves the previous checkpoint
intact and the next start restores from it.
"""

import glob
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores `{'state': pytree, 'meta': json}` under `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int, async_save: bool):
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    _remove_unfinished_saves(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        enable_async_checkpointing=async_save,
        # Done synchronously above: orbax's background cleanup thread can
        # outlive a run that fails fast and crash the interpreter at exit.
        cleanup_tmp_directories=False,
    )
    self.directory = directory
    self._manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
        ),
        force=True,
    )

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores `step` into the structure, dtypes and shardings of `abstract_state`."""
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return restored.state, dict(restored.meta)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    try:
      self._manager.wait_until_finished()
    finally:
      self._manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing `tree`, for restoring into."""

  def leaf(x):
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  return jax.tree.map(leaf, tree)


def _remove_unfinished_saves(directory: str) -> None:
  """Deletes temporary directories of saves that a killed run left behind."""
  if jax.process_index() != 0:
    return
  for path in glob.glob(os.path.join(directory, "*.orbax-checkpoint-tmp*")):
    shutil.rmtree(path, ignore_errors=True)
