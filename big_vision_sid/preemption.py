"""Stop cleanly on SIGTERM/SIGINT: finish the step, save, exit with `EXIT_CODE`.

Preemptible VMs get SIGTERM some seconds before they are taken away. While
`StopSignal` is active, SIGTERM and SIGINT only set a flag; the trainer
checks it after every step (a Python attribute read, no device round trip),
saves a checkpoint synchronously at that step and raises `Preempted`, which
the command line turns into exit code `EXIT_CODE`. Further signals while it
stops are logged and ignored, so a second Ctrl-C cannot interrupt the save
(SIGKILL still can: orbax's atomic rename then keeps the previous checkpoint).

Multi-host runs (`jax.distributed`) must save the SAME step on every host.
There JAX's preemption service owns SIGTERM: one host receiving it is enough,
the hosts agree on a step in the background, and
`multihost_utils.reached_preemption_sync_point(step)` becomes True at that
step on all of them. SIGINT is forwarded to it as SIGTERM.
"""

import os
import signal
import threading
import types
from typing import Any

from absl import logging

# sysexits.h EX_TEMPFAIL: a temporary failure, retrying (re-running) resumes.
EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """Training stopped at `step` on a signal, after saving a checkpoint there."""

  def __init__(self, step: int):
    super().__init__(f"preempted at step {step}, checkpoint saved")
    self.step = step


class StopSignal:
  """Between `install` and `uninstall`, SIGTERM/SIGINT request a stop (see module)."""

  def __init__(self):
    self.requested_by: str | None = None
    self._previous: dict[int, Any] = {}
    self._multihost = False

  def install(self) -> None:
    """Takes over SIGTERM/SIGINT (see the module docstring)."""
    import jax  # pylint: disable=g-import-not-at-top
    if threading.current_thread() is not threading.main_thread():
      logging.warning("Not in the main thread: SIGTERM/SIGINT will not save "
                      "a checkpoint before stopping.")
      return
    if jax.process_count() > 1:
      if not jax.config.jax_enable_preemption_service:
        logging.warning(
            "JAX's preemption service is off (jax_enable_preemption_service): "
            "a SIGTERM stops this multi-host run without a final checkpoint.")
        return
      # SIGTERM stays with JAX's preemption service, which syncs the hosts.
      self._multihost = True
      self._install(signal.SIGINT, self._forward_as_sigterm)
    else:
      for signum in SIGNALS:
        self._install(signum, self._request)

  def uninstall(self) -> None:
    """Gives the signals their previous handlers back (again: a no-op)."""
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def reached(self, step: int) -> bool:
    """Whether to save at `step` and stop; call after every step, on every host."""
    if self._multihost:
      return _reached_sync_point(step)
    return self.requested_by is not None

  def _install(self, signum: int, handler: Any) -> None:
    self._previous[signum] = signal.signal(signum, handler)

  def _request(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.requested_by is not None:
      logging.warning("%s ignored: already stopping (on %s).", name,
                      self.requested_by)
      return
    self.requested_by = name
    logging.warning("%s received: finishing the current step, then saving a "
                    "checkpoint and exiting with code %d.", name, EXIT_CODE)

  def _forward_as_sigterm(self, signum: int,
                          frame: types.FrameType | None) -> None:
    del signum, frame
    if self.requested_by is None:
      self.requested_by = "SIGINT"
      logging.warning("SIGINT received: asking every host to save a checkpoint "
                      "at a common step, then exit with code %d.", EXIT_CODE)
      os.kill(os.getpid(), signal.SIGTERM)


def _reached_sync_point(step: int) -> bool:
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.reached_preemption_sync_point(step)
