"""Metric writers: a JSONL log that scripts read, plus TensorBoard summaries.

TensorBoard summaries go through clu's TensorFlow-backed `SummaryWriter` when
TensorFlow is installed, and otherwise through the `tensorboard` package's
own event-file writer, so runs on machines without TensorFlow (e.g. a GPU box
fed by the on-device JAX patch generator) still get curves.
"""

import json
import math
import os
import time
from typing import Any, Mapping, Protocol

from absl import logging
import numpy as np

from big_vision_sid import workdir as workdir_lib


class ScalarWriter(Protocol):

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    ...

  def flush(self) -> None:
    ...

  def close(self) -> None:
    ...


def _to_float(value: Any) -> float:
  return float(np.asarray(value))


class JsonlWriter:
  """Appends one JSON object per `write_scalars` call to `metrics.jsonl`."""

  def __init__(self, path: str):
    self.path = path
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    record: dict[str, Any] = {"step": int(step)}
    for key, value in scalars.items():
      value = _to_float(value)
      # JSON has no NaN/inf; keep the line parseable and the problem visible.
      record[key] = value if math.isfinite(value) else str(value)
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


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


def _tensorboard_writer(logdir: str) -> ScalarWriter | None:
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    return metric_writers.SummaryWriter(logdir)
  except ImportError:
    pass
  try:
    return TensorboardEventWriter(logdir)
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
  os.makedirs(workdir, exist_ok=True)
  writers: list[ScalarWriter] = [JsonlWriter(
      os.path.join(workdir, workdir_lib.METRICS_FILE))]
  tensorboard = _tensorboard_writer(workdir)
  if tensorboard is not None:
    writers.append(tensorboard)
  return MultiWriter(writers)
