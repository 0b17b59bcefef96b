"""Atomic, resumable checkpoints of the train state with orbax.

Orbax writes each step into a temporary directory and renames it when the
save is complete, so a run killed mid-save leaves the previous checkpoint
intact and the next start restores from it. Opened `read_only`, a
checkpointer only lists and restores (e.g. to evaluate a run while it trains).

The directory is an `etils.epath.Path`, so `gs://` workdirs are written to
object storage, never to a local `./gs:` folder. A checkpoint that cannot be
read (a garbled or truncated file) is reported in one line by
`restore_latest`, moved aside to `checkpoints/corrupt-<step>-<time>` (kept for
inspection, never deleted) and the previous intact one is used instead. A
checkpoint that is intact but does not fit the model (the config changed) is
an error, never moved.
"""

import time
from typing import Any

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from big_vision_sid import workdir as workdir_lib

# The composite items of each step directory.
_STATE_ITEM = "state"
CORRUPT_PREFIX = "corrupt-"


class CorruptCheckpointError(ValueError):
  """A checkpoint's files cannot be read."""


class CheckpointMismatchError(ValueError):
  """A readable checkpoint holds arrays of other shapes than the model's."""


class Checkpointer:
  """Saves and restores `{'state': pytree, 'meta': json}` under `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int | None = None,
               async_save: bool = False, read_only: bool = False):
    """Opens (and, unless `read_only`, creates) the checkpoint directory.

    Args:
      workdir: the run's directory (a local path or a URL such as gs://...).
      keep: how many of the latest checkpoints saving keeps (None: all).
      async_save: save in a background thread.
      read_only: only list and restore checkpoints: nothing in the workdir is
        created, cleaned up, moved or deleted, so a running trainer's
        unfinished saves are left alone (and not listed).

    Raises:
      FileNotFoundError: `read_only` and the directory does not exist.
    """
    directory = workdir_lib.as_path(workdir) / workdir_lib.CHECKPOINT_DIR
    if read_only:
      if not directory.is_dir():
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
    self.directory: epath.Path = directory
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
    """Restores `step` into the structure, dtypes and shardings of `abstract_state`.

    Raises:
      CheckpointMismatchError: the checkpoint's arrays have other shapes (or
        another number of arrays) than `abstract_state`.
      CorruptCheckpointError: its files cannot be read.
    """
    try:
      restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state),
              meta=ocp.args.JsonRestore(),
          ),
      )
    except Exception as e:  # pylint: disable=broad-except
      # Orbax and tensorstore raise anything from UnicodeDecodeError to a bare
      # Exception for a damaged file; what matters is whether the arrays on
      # disk are those the model expects.
      self._raise_mismatch(step, abstract_state)
      raise CorruptCheckpointError(
          f"Checkpoint {self.directory / str(step)} cannot be read "
          f"({type(e).__name__}: {_first_line(e)})") from e
    return restored.state, dict(restored.meta)

  def restore_latest(self, abstract_state: Any
                     ) -> tuple[int, Any, dict[str, Any]] | None:
    """Restores the newest readable checkpoint, moving unreadable ones aside.

    Args:
      abstract_state: what to restore into (see `restore`).

    Returns:
      (step, state, meta), or None when there is no checkpoint.

    Raises:
      CorruptCheckpointError: there were checkpoints but none is readable
        (they are moved aside; the error names the folder).
      CheckpointMismatchError: the newest readable one does not fit.
    """
    steps = sorted(self.all_steps(), reverse=True)
    moved = []
    for step in steps:
      try:
        state, meta = self.restore(step, abstract_state)
      except CorruptCheckpointError as e:
        if self.read_only:
          raise
        moved.append(self._move_aside(step).name)
        logging.warning("%s; moved it aside to %s and trying the previous one.",
                        e, moved[-1])
        continue
      return step, state, meta
    if moved:
      raise CorruptCheckpointError(
          f"No intact checkpoint in {self.directory}: the unreadable ones were "
          f"moved aside ({', '.join(moved)}); re-running starts from step 0.")
    return None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    try:
      self._manager.wait_until_finished()
    finally:
      self._manager.close()

  def _raise_mismatch(self, step: int, abstract_state: Any) -> None:
    """Raises CheckpointMismatchError if `step` is readable but does not fit."""
    try:
      on_disk = ocp.StandardCheckpointHandler().metadata(
          self.directory / str(step) / _STATE_ITEM).tree
    except Exception:  # pylint: disable=broad-except
      return  # Its metadata is unreadable too: corrupt, not a mismatch.
    saved = sorted(tuple(getattr(x, "shape", ())) for x in jax.tree.leaves(on_disk))
    expected = sorted(tuple(x.shape) for x in jax.tree.leaves(abstract_state))
    if saved != expected:
      raise CheckpointMismatchError(
          f"Checkpoint {self.directory / str(step)} does not fit this config's "
          f"model and optimizer ({len(saved)} arrays saved, {len(expected)} "
          "expected, or other shapes): was the config changed? Use a new "
          "workdir for a different model.")

  def _move_aside(self, step: int) -> epath.Path:
    """Renames step `step`'s directory to `corrupt-<step>-<time>` (process 0)."""
    target = self.directory / (
        f"{CORRUPT_PREFIX}{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
    self._manager.reload()
    return target


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0][:300] if lines else ""


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing `tree`, for restoring into."""

  def leaf(x):
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  return jax.tree.map(leaf, tree)


def _remove_unfinished_saves(directory: epath.Path) -> None:
  """Deletes temporary directories of saves that a killed run left behind."""
  if jax.process_index() != 0 or not directory.exists():
    return
  for path in directory.glob("*.orbax-checkpoint-tmp*"):
    try:
      path.rmtree()
    except OSError as e:  # Orbax writes elsewhere; a leftover only wastes space.
      logging.warning("Could not remove the unfinished save %s: %s", path, e)
