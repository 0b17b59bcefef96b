"""One training run per workdir: a lock file naming the run that holds it.

`<workdir>/train.lock` is a small JSON object (pid, host, start time, a
heartbeat refreshed every minute, a random token). A second run on the same
workdir is refused with a message naming the holder. A lock whose holder is
gone is taken over with a warning: on the same host when its pid is no longer
alive, on any host when its heartbeat is older than `STALE_SECONDS` (a run
killed on a preempted VM cannot remove its lock). The processes of one
multi-host run share the lock: process 0 holds it and tells the others
whether it got it. Readers (`python -m big_vision_sid.evaluate`, the report)
ignore the lock: they never write.

Local locks are created with O_EXCL, so two runs starting at once cannot both
win. On object storage (`gs://`) the lock is written and read back: it stops
any second run that starts after the first has its lock, which is the case
that matters (a re-run while the first is still going).
"""

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from typing import Iterator
import uuid

from absl import logging

from big_vision_sid import workdir as workdir_lib

HEARTBEAT_SECONDS = 60.0
# A lock not refreshed for this long belongs to a dead run, wherever it ran.
STALE_SECONDS = 600.0


class WorkdirInUseError(RuntimeError):
  """Another live run holds the workdir's lock."""


@dataclasses.dataclass(frozen=True)
class Holder:
  """The content of a lock file."""
  pid: int
  host: str
  started: float
  heartbeat: float
  token: str

  def describe(self) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
    return f"pid {self.pid} on host {self.host} (since {started})"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, another user's.
    return True
  return True


# What `read_holder` returns for a lock file cut short by a crash mid-write.
_UNREADABLE = Holder(pid=-1, host="unknown", started=0.0, heartbeat=0.0, token="")


def stale_reason(holder: Holder, now: float | None = None) -> str | None:
  """Why `holder`'s run is gone, or None while it may still be running."""
  now = time.time() if now is None else now
  if holder == _UNREADABLE:
    return "the lock file cannot be read"
  if holder.host == socket.gethostname() and not _pid_alive(holder.pid):
    return f"pid {holder.pid} is not running on this host"
  if now - holder.heartbeat > STALE_SECONDS:
    return f"its heartbeat is {workdir_lib.format_duration(now - holder.heartbeat)} old"
  return None


def read_holder(workdir: str) -> Holder | None:
  """The workdir's lock holder; None without a lock (or with an unreadable one)."""
  path = workdir_lib.as_path(workdir) / workdir_lib.LOCK_FILE
  try:
    fields = json.loads(path.read_text(encoding="utf-8"))
    return Holder(**{f.name: fields[f.name] for f in dataclasses.fields(Holder)})
  except FileNotFoundError:
    return None
  except (ValueError, KeyError, TypeError):
    return _UNREADABLE


class WorkdirLock:
  """The lock of one workdir, held by this process (see the module docstring)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = workdir_lib.as_path(workdir) / workdir_lib.LOCK_FILE
    now = time.time()
    self.holder = Holder(pid=os.getpid(), host=socket.gethostname(), started=now,
                         heartbeat=now, token=uuid.uuid4().hex)
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def acquire(self) -> None:
    """Takes the lock, or takes over a stale one with a warning.

    Raises:
      WorkdirInUseError: a live run holds it (the error names its pid and host).
    """
    current = read_holder(self.workdir)
    if current is not None:
      reason = stale_reason(current)
      if reason is None:
        raise WorkdirInUseError(self._in_use_message(current))
      logging.warning("Taking over the stale lock %s of %s: %s.", self.path,
                      current.describe(), reason)
      self._write()
    elif not self._create_exclusive():
      # Another run created it between our read and our create.
      raise WorkdirInUseError(self._in_use_message(read_holder(self.workdir)))
    confirmed = read_holder(self.workdir)
    if confirmed is None or confirmed.token != self.holder.token:
      raise WorkdirInUseError(self._in_use_message(confirmed))
    self._thread = threading.Thread(target=self._beat, name="workdir-lock",
                                    daemon=True)
    self._thread.start()

  def release(self) -> None:
    """Stops the heartbeat and removes the lock if it is still ours."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    current = read_holder(self.workdir)
    if current is not None and current.token == self.holder.token:
      self.path.unlink(missing_ok=True)

  def _in_use_message(self, holder: Holder | None) -> str:
    who = holder.describe() if holder else "another run"
    return (f"Workdir {self.workdir} is in use by {who}: wait for that run to "
            f"finish, or delete {self.path} if it is no longer running.")

  def _content(self) -> str:
    return json.dumps(dataclasses.asdict(self.holder), sort_keys=True)

  def _create_exclusive(self) -> bool:
    if workdir_lib.is_remote(self.path):
      self._write()
      return True
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(self._content())
    return True

  def _write(self) -> None:
    workdir_lib.write_text(self.path, self._content())

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        current = read_holder(self.workdir)
        if current is None or current.token != self.holder.token:
          logging.error("Lost the workdir lock %s to %s.", self.path,
                        current.describe() if current else "nobody")
          return
        self.holder = dataclasses.replace(self.holder, heartbeat=time.time())
        self._write()
      except OSError as e:  # A transient storage error must not stop training.
        logging.warning("Could not refresh the workdir lock %s: %s", self.path, e)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[WorkdirLock | None]:
  """Holds the workdir's lock for the duration (process 0 of a multi-host run).

  Args:
    workdir: the run's directory (created already).

  Yields:
    The lock on process 0, None on the other processes.

  Raises:
    WorkdirInUseError: another live run holds the lock (on every process of
      a multi-host run).
  """
  import jax  # pylint: disable=g-import-not-at-top
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
  error: Exception | None = None
  if lock is not None:
    try:
      lock.acquire()
    except Exception as e:  # pylint: disable=broad-except
      # Raised below, once the other processes know (they would wait forever).
      error = e
  if jax.process_count() > 1 and not _process_0_agrees(error is None):
    error = error or WorkdirInUseError(
        f"Workdir {workdir} is in use by another run: process 0 could not take "
        "its lock (see its log).")
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()


def _process_0_agrees(acquired: bool) -> bool:
  """Process 0's `acquired`, on every process of a multi-host run."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.broadcast_one_to_all(np.int32(acquired)))
