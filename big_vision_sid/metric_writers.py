"""Metric writers: a JSONL log that scripts read, plus TensorBoard summaries.

TensorBoard summaries go through clu's TensorFlow-backed `SummaryWriter` when
TensorFlow is installed, and otherwise through the `tensorboard` package's
own event-file writer, so runs on machines without TensorFlow (e.g. a GPU box
fed by the on-device JAX patch generator) still get curves.

A remote workdir (`gs://...`) gets the same files through `etils.epath`:
object storage cannot append, so `metrics.jsonl` is rewritten whole, at most
every `REMOTE_UPLOAD_SECONDS` and on every flush (the trainer flushes at each
checkpoint). Its TensorBoard events need TensorFlow's gfile (clu's writer);
without TensorFlow they are skipped with a warning.
"""

import json
import math
import os
import time
from typing import Any, Mapping, Protocol

from absl import logging
from etils import epath
import numpy as np

import input_pipeline
from big_vision_sid import workdir as workdir_lib


class ScalarWriter(Protocol):

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    ...

  def flush(self) -> None:
    ...

  def close(self) -> None:
    ...


REMOTE_UPLOAD_SECONDS = 30.0


def _to_float(value: Any) -> float:
  return float(np.asarray(value))


def _jsonl_line(step: int, scalars: Mapping[str, float]) -> str:
  record: dict[str, Any] = {"step": int(step)}
  for key, value in scalars.items():
    value = _to_float(value)
    # JSON has no NaN/inf; keep the line parseable and the problem visible.
    record[key] = value if math.isfinite(value) else str(value)
  return json.dumps(record) + "\n"


class JsonlWriter:
  """Appends one JSON object per `write_scalars` call to `metrics.jsonl`."""

  def __init__(self, path: str):
    self.path = path
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._file.write(_jsonl_line(step, scalars))
    self._file.flush()

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class RemoteJsonlWriter:
  """`JsonlWriter` on object storage: keeps the lines, rewrites the object."""

  def __init__(self, path: epath.Path):
    self.path = path
    # A resumed run continues the file, as appending would.
    self._lines = [path.read_text(encoding="utf-8")] if path.exists() else []
    self._dirty = False
    self._last_upload = time.time()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._lines.append(_jsonl_line(step, scalars))
    self._dirty = True
    if time.time() - self._last_upload >= REMOTE_UPLOAD_SECONDS:
      self.flush()

  def flush(self) -> None:
    if self._dirty:
      workdir_lib.write_text(self.path, "".join(self._lines))
      self._dirty = False
    self._last_upload = time.time()

  def close(self) -> None:
    self.flush()


class TensorboardEventWriter:
  """Scalar summaries via the `tensorboard` package alone (no TensorFlow)."""

  def __init__(self, logdir: str):
    # Imported here: only this fallback needs the tensorboard package.
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.summary.writer import event_file_writer  # pylint: disable=g-import-not-at-top
    self._event_pb2 = event_pb2
    self._summary_pb2 = summary_pb2
    self._writer = event_file_writer.EventFileWriter(logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    values = [
        self._summary_pb2.Summary.Value(tag=key, simple_value=_to_float(value))
        for key, value in scalars.items()
    ]
    event = self._event_pb2.Event(
        wall_time=time.time(),
        step=int(step),
        summary=self._summary_pb2.Summary(value=values),
    )
    self._writer.add_event(event)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _tensorboard_writer(logdir: epath.Path) -> ScalarWriter | None:
  """TensorBoard events in `logdir` by the best writer installed, or None."""
  try:
    input_pipeline.import_tensorflow()  # clu needs it; this mutes its banner.
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    return metric_writers.SummaryWriter(os.fspath(logdir))
  except ImportError:
    pass
  if workdir_lib.is_remote(logdir):
    logging.warning(
        "TensorFlow (with clu) is not installed: no TensorBoard summaries in "
        "the remote workdir %s, only %s.", logdir, workdir_lib.METRICS_FILE)
    return None
  try:
    return TensorboardEventWriter(os.fspath(logdir))
  except ImportError:
    logging.warning(
        "Neither TensorFlow+clu nor tensorboard is installed: no TensorBoard "
        "summaries, only %s/%s.", logdir, workdir_lib.METRICS_FILE)
    return None


class MultiWriter:
  """Forwards every call to several writers; only process 0 should write."""

  def __init__(self, writers: list[ScalarWriter]):
    self._writers = writers

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for writer in self._writers:
      writer.write_scalars(step, scalars)

  def flush(self) -> None:
    for writer in self._writers:
      writer.flush()

  def close(self) -> None:
    for writer in self._writers:
      writer.close()


def create_writer(workdir: str, *, enabled: bool = True) -> MultiWriter:
  """JSONL + TensorBoard writer for `workdir`; a no-op writer if not enabled."""
  if not enabled:
    return MultiWriter([])
  directory = workdir_lib.as_path(workdir)
  directory.mkdir(parents=True, exist_ok=True)
  metrics = directory / workdir_lib.METRICS_FILE
  writers: list[ScalarWriter] = [
      RemoteJsonlWriter(metrics) if workdir_lib.is_remote(directory)
      else JsonlWriter(os.fspath(metrics))]
  tensorboard = _tensorboard_writer(directory)
  if tensorboard is not None:
    writers.append(tensorboard)
  return MultiWriter(writers)
