"""A run's working directory: its file names, atomic writes, loading a run.

Every module that reads or writes a workdir takes the names from here, writes
files atomically (write a temporary file beside the target, then rename, so a
reader or a resumed run never sees half a file) and formats durations and
cache keys the same way. This module imports only numpy at the top, so the
report and the sweep stay light; `load_run` imports JAX and the models when
called.
"""

import dataclasses
import hashlib
import json
import math
import os
import uuid
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
  import flax.linen as nn
  import jax
  import ml_collections
  from big_vision_sid import targets
  from big_vision_sid import train_step

CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
# The trainer's console output, which the sweep tees into each cell's workdir.
STDOUT_LOG_FILE = "stdout.log"
CHECKPOINT_DIR = "checkpoints"
EXPORTED_TEACHER_FILE = "teacher.msgpack"

# `config.target` of configs written before it existed: supervised runs said
# `teacher.format = "none"`, every other run distilled its teacher.
_LEGACY_SUPERVISED_FORMAT = "none"


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], *,
                 binary: bool = True) -> None:
  """Calls `write(file)` on a temporary file beside `path`, then renames it.

  If `write` raises, the temporary file is removed and `path` keeps its old
  content (or stays absent).

  Args:
    path: the final file; its directory is created if needed.
    write: writes the content into the open file object it is given.
    binary: open the temporary file in binary (else text, UTF-8) mode.
  """
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  # Ends in ".tmp", so globs for the final extension never match it.
  temp_path = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
  # os.open honours the umask (tempfile's files are always 0600), so the file
  # gets the permissions a plain open() would give it.
  fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "wb" if binary else "w",
                   **({} if binary else {"encoding": "utf-8"})) as f:
      write(f)
    os.replace(temp_path, path)
  except BaseException:
    if os.path.exists(temp_path):
      os.unlink(temp_path)
    raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
  """Writes `text` (UTF-8), atomically."""
  atomic_write(path, lambda f: f.write(text), binary=False)


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
  """Writes `payload` as indented, key-sorted JSON, atomically."""
  atomic_write(path, lambda f: json.dump(payload, f, indent=2, sort_keys=True),
               binary=False)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
  """Reads a JSON object.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: it is not valid JSON or holds no object (the error names it).
  """
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None
  if not isinstance(value, dict):
    raise ValueError(f"{path} holds a {type(value).__name__}, not an object.")
  return value


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
  """Saves `array` as .npy, atomically."""
  atomic_write(path, lambda f: np.save(f, array))


def format_duration(seconds: float | None) -> str:
  """42 -> '42s', 185 -> '3m05s', 3725 -> '1h02m'; '-' for None or non-finite."""
  if seconds is None or not math.isfinite(seconds):
    return "-"
  seconds = max(round(seconds), 0)
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def cache_key(fields: dict[str, Any], length: int = 24) -> str:
  """A stable hex digest of `fields` (JSON with sorted keys), for cache names."""
  blob = json.dumps(fields, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:length]


def file_identity(path: str) -> list[Any]:
  """[absolute path, size, mtime_ns]: changes whenever the file is replaced."""
  stat = os.stat(path)
  return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def load_config(workdir: str) -> "ml_collections.ConfigDict":
  """The run's `config.json` as a ConfigDict, with `target` always set.

  Args:
    workdir: the run's directory.

  Returns:
    The config the run was trained with. Configs that predate `config.target`
    get "labels" when they said `teacher.format = "none"`, else "teacher".

  Raises:
    FileNotFoundError: `workdir` or its config.json does not exist.
    ValueError: config.json is malformed.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"Workdir {workdir} does not exist.")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"Workdir {workdir} has no {CONFIG_FILE}: not a trainer workdir.")
  config = ml_collections.ConfigDict(read_json(path))
  if "target" not in config:
    legacy = config.get("teacher", {}).get("format") == _LEGACY_SUPERVISED_FORMAT
    config.target = "labels" if legacy else "teacher"
  return config


@dataclasses.dataclass(frozen=True)
class FinishedRun:
  """A run's student restored from one of its checkpoints, and its target.

  Attributes:
    workdir: the run's directory.
    config: its config (see `load_config`).
    step: the step of the restored checkpoint.
    steps: every checkpoint step in the workdir, ascending.
    student: the student module, built as the trainer builds it.
    state: the train state at `step` without the optimiser state
      (`opt_state=None`): what `train_step.make_predict_fn`'s function takes.
    target: the run's target (its teacher; no network for supervised runs).
    result: result.json, or None when the run is unfinished.
  """
  workdir: str
  config: "ml_collections.ConfigDict"
  step: int
  steps: list[int]
  student: "nn.Module"
  state: "train_step.TrainState"
  target: "targets.Target"
  result: dict[str, Any] | None

  @property
  def variables(self) -> dict[str, Any]:
    """The student's `{"params", "batch_stats"}` at `step`."""
    return {"params": self.state.params, "batch_stats": self.state.batch_stats}


def load_run(workdir: str, step: int | None = None, *,
             sharding: "jax.sharding.Sharding | None" = None) -> FinishedRun:
  """Restores a run's student from a checkpoint and loads its target, read-only.

  Nothing in `workdir` is written, deleted or cleaned up, so this works on a
  run that is still training (its unfinished saves are ignored) and on a
  read-only copy.

  Args:
    workdir: the run's directory.
    step: the checkpoint to restore; None for the latest.
    sharding: where the restored arrays live; default replicated on all
      devices (as the trainer keeps them).

  Returns:
    The run.

  Raises:
    FileNotFoundError: `workdir`, its config.json or any checkpoint is
      missing.
    ValueError: there is no checkpoint at `step` (the error lists the steps
      there are), or the config is invalid.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from big_vision_sid import checkpointing
  from big_vision_sid import models
  from big_vision_sid import optim
  from big_vision_sid import parallel
  from big_vision_sid import targets
  from big_vision_sid import train_step
  # pylint: enable=g-import-not-at-top
  config = load_config(workdir)
  checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
  try:
    steps = sorted(checkpointer.all_steps())
    if not steps:
      raise FileNotFoundError(
          f"Workdir {workdir} has no checkpoint in {checkpointer.directory}.")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise ValueError(
          f"Workdir {workdir} has no checkpoint at step {step}; available "
          f"steps: {', '.join(map(str, steps))}.")
    compute_dtype = jnp.dtype(config.compute_dtype)
    student = models.build_model(
        config.student.name, config.student.num_classes, dtype=compute_dtype)
    # The schedule's length does not change the optimiser state's structure.
    tx, _ = optim.make_optimizer(
        config.optim, max(config.get("total_steps") or step, 1))
    image_shape = (config.input.patch_size, config.input.patch_size, 3)
    abstract_state = jax.eval_shape(
        lambda rng: train_step.create_train_state(rng, student, tx, image_shape),
        jax.random.PRNGKey(config.seed))
    if sharding is None:
      sharding = parallel.data_parallel().replicated
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        abstract_state)
    state, _ = checkpointer.restore(step, abstract_state)
  finally:
    checkpointer.close()
  result_path = os.path.join(workdir, RESULT_FILE)
  return FinishedRun(
      workdir=workdir, config=config, step=int(step), steps=steps,
      student=student, state=state.replace(opt_state=None),
      target=targets.build_target(config, compute_dtype),
      result=read_json(result_path) if os.path.isfile(result_path) else None)
