"""Atomic, resumable checkpoints of the train state with orbax.

Orbax writes each step into a temporary directory and renames it when the
save is complete, so a run killed mid-save leaves the previous checkpoint
intact and the next start restores from it. Opened `read_only`, a
checkpointer only lists and restores (e.g. to evaluate a run while it trains).
"""

import glob
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from big_vision_sid import workdir as workdir_lib


class Checkpointer:
  """Saves and restores `{'state': pytree, 'meta': json}` under `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int | None = None,
               async_save: bool = False, read_only: bool = False):
    """Opens (and, unless `read_only`, creates) the checkpoint directory.

    Args:
      workdir: the run's directory.
      keep: how many of the latest checkpoints saving keeps (None: all).
      async_save: save in a background thread.
      read_only: only list and restore checkpoints: nothing in the workdir is
        created, cleaned up or deleted, so a running trainer's unfinished
        saves are left alone (and not listed).

    Raises:
      FileNotFoundError: `read_only` and the directory does not exist.
    """
    directory = os.path.join(os.path.abspath(workdir), workdir_lib.CHECKPOINT_DIR)
    if read_only:
      if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Workdir {workdir} has no checkpoint: {directory} does not exist.")
      options = ocp.CheckpointManagerOptions(
          read_only=True, create=False, max_to_keep=None,
          save_interval_steps=0, enable_async_checkpointing=False,
          cleanup_tmp_directories=False)
    else:
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
    self.read_only = read_only
    self._manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    if self.read_only:
      # Orbax would skip the save silently.
      raise RuntimeError(f"{self.directory} was opened read-only; not saving.")
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
