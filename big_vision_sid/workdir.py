"""A run's working directory: its file names, atomic writes, loading a run.

Every module that reads or writes a workdir takes the names from here, writes
files atomically (write a temporary file beside the target, then rename, so a
reader or a resumed run never sees half a file) and formats durations and
cache keys the same way. A workdir may be a local folder or a remote URL
(`gs://bucket/run` on TPU VMs): every read and write goes through
`etils.epath`, the path type orbax uses, and only local paths are made
absolute, so a remote path never becomes a local `./gs:` folder. This module
imports only numpy and etils at the top, so the report and the sweep stay
light; `load_run` imports JAX and the models when called.
"""

import dataclasses
import hashlib
import json
import math
import os
import uuid
from typing import TYPE_CHECKING, Any, Callable

from etils import epath
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
# Who is training in the workdir (big_vision_sid/workdir_lock.py).
LOCK_FILE = "train.lock"
# `config.json`'s record of the code and machine (big_vision_sid/provenance.py);
# not a config field.
PROVENANCE_KEY = "provenance"
# Calibrated int8 input ranges of a quantised run (config.compress).
QUANT_RANGES_FILE = "quant_ranges.json"

# `config.target` of configs written before it existed: supervised runs said
# `teacher.format = "none"`, every other run distilled its teacher.
_LEGACY_SUPERVISED_FORMAT = "none"


class WorkdirError(OSError):
  """The workdir cannot be created or written (one line names it and why)."""


def is_remote(path: str | os.PathLike[str]) -> bool:
  """Whether `path` is a URL such as `gs://bucket/run` rather than a local path."""
  return "://" in os.fspath(path)


def as_path(path: str | os.PathLike[str]) -> epath.Path:
  """`path` as an `epath.Path`: remote URLs as they are, local paths absolute."""
  path = os.fspath(path)
  return epath.Path(path if is_remote(path) else os.path.abspath(path))


def prepare(workdir: str | os.PathLike[str]) -> epath.Path:
  """Creates `workdir` if needed and checks that files can be written in it.

  Args:
    workdir: a local folder or a remote URL.

  Returns:
    The workdir as a path (see `as_path`).

  Raises:
    WorkdirError: it is a file, cannot be created (a file in the way, no
      permission, an impossible location) or is not writable.
  """
  path = as_path(workdir)
  try:
    if path.exists() and not path.is_dir():
      raise WorkdirError(f"Workdir {workdir} is a file, not a directory.")
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    if isinstance(e, WorkdirError):
      raise
    where = f" ({e.filename})" if e.filename else ""
    raise WorkdirError(f"Workdir {workdir} cannot be created: "
                       f"{_reason(e)}{where}.") from None
  probe = path / f".write-test-{uuid.uuid4().hex[:12]}.tmp"
  try:
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(
        f"Workdir {workdir} is not writable: {_reason(e)}.") from None
  return path


def _reason(error: OSError) -> str:
  return error.strerror or str(error) or type(error).__name__


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], *,
                 binary: bool = True) -> None:
  """Calls `write(file)` on a temporary file beside `path`, then renames it.

  If `write` raises, the temporary file is removed and `path` keeps its old
  content (or stays absent). Remote paths (`gs://...`) go through epath.

  Args:
    path: the final file; its directory is created if needed.
    write: writes the content into the open file object it is given.
    binary: open the temporary file in binary (else text, UTF-8) mode.
  """
  if is_remote(path):
    _atomic_write_remote(as_path(path), write, binary=binary)
    return
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


def _atomic_write_remote(path: epath.Path, write: Callable[[Any], None], *,
                         binary: bool) -> None:
  """`atomic_write` on object storage: upload a temporary object, then rename."""
  path.parent.mkdir(parents=True, exist_ok=True)
  temp_path = path.parent / f"{path.name}.{uuid.uuid4().hex[:12]}.tmp"
  try:
    # Object stores have no text mode with an encoding: encode here.
    with temp_path.open("wb") as f:
      write(f if binary else _Utf8Writer(f))
    temp_path.replace(path)
  except BaseException:
    if temp_path.exists():
      temp_path.unlink()
    raise


class _Utf8Writer:
  """The `write(str)` of a text file, over a binary file object."""

  def __init__(self, binary_file: Any):
    self._file = binary_file

  def write(self, text: str) -> int:
    self._file.write(text.encode("utf-8"))
    return len(text)


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
  text = as_path(path).read_text(encoding="utf-8")
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
  if not as_path(workdir).is_dir():
    raise FileNotFoundError(f"Workdir {workdir} does not exist.")
  path = as_path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(
        f"Workdir {workdir} has no {CONFIG_FILE}: not a trainer workdir.")
  fields = read_json(path)
  fields.pop(PROVENANCE_KEY, None)
  config = ml_collections.ConfigDict(fields)
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
    student_apply: `student.apply`, or its fake-quantised version for an
      int8 run (config.compress), as the trainer evaluated it.
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
  student_apply: Any
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
  from big_vision_sid.compression import plan as compression_plan
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
    total_steps = max(config.get("total_steps") or step, 1)
    tx, _ = optim.make_optimizer(config.optim, total_steps)
    ranges_path = as_path(workdir) / QUANT_RANGES_FILE
    plan = compression_plan.build_plan(
        config.get("compress"), total_steps,
        input_ranges=read_json(ranges_path) if ranges_path.exists() else None)
    image_shape = (config.input.patch_size, config.input.patch_size, 3)
    student_shapes = jax.eval_shape(lambda: student.init(
        jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False))
    tx = plan.wrap_optimizer(tx, student_shapes.get("batch_stats", {}))
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
  result_path = as_path(workdir) / RESULT_FILE
  return FinishedRun(
      workdir=workdir, config=config, step=int(step), steps=steps,
      student=student, student_apply=plan.student_apply(student),
      state=state.replace(opt_state=None),
      target=targets.build_target(config, compute_dtype),
      result=read_json(result_path) if result_path.exists() else None)
