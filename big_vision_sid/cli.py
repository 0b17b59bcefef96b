"""What every command-line entry point shares: logs, errors, the RESULT line.

`train`, `evaluate` and `export` report a user's mistake (a bad config value,
a missing file, a checkpoint that does not fit) as ONE line on stderr and exit
1; everything else is a bug and keeps its traceback. A run stopped by
SIGTERM/SIGINT after saving a checkpoint says so in one line and exits
`preemption.EXIT_CODE` (75): re-running the same command resumes it. Each
ends with one machine-readable `RESULT {json}` line on stdout.

`train.log` of a remote workdir (`gs://...`) is written to a local temporary
file, because a logging.FileHandler can only write local files, and copied up
by `upload_logs` (the trainer calls it at every checkpoint and at the end).
"""

import json
import logging as std_logging
import os
import sys
import tempfile
from typing import Any, Callable, NoReturn

from absl import logging

from big_vision_sid import preemption
from big_vision_sid import workdir as workdir_lib
from big_vision_sid import workdir_lock


class NonFiniteLossError(RuntimeError):
  """The loss or the parameters became NaN/inf; nothing non-finite is saved."""


# Errors caused by the user's input (config, files): reported as one clear line.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NonFiniteLossError,
               workdir_lib.WorkdirError, workdir_lock.WorkdirInUseError)

# (local file, remote destination) of each remote log file being written.
_REMOTE_LOGS: list[tuple[str, str]] = []


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of orbax (a dozen lines per save or restore)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def setup_logging(log_file: str | None = None) -> None:
  """absl logs to stderr (and to `log_file` if given), without orbax's INFO.

  Args:
    log_file: a local path, or a remote one (written locally and copied up by
      `upload_logs`).
  """
  handlers = [logging.get_absl_handler()]
  if log_file:
    local_file = log_file
    if workdir_lib.is_remote(log_file):
      fd, local_file = tempfile.mkstemp(prefix="big_vision_sid-", suffix=".log")
      os.close(fd)
      remote = workdir_lib.as_path(log_file)
      if remote.exists():  # A resumed run continues the log.
        with open(local_file, "w", encoding="utf-8") as f:
          f.write(remote.read_text(encoding="utf-8"))
      _REMOTE_LOGS.append((local_file, log_file))
    handler = std_logging.FileHandler(local_file)
    handler.setFormatter(
        std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.get_absl_logger().addHandler(handler)
    handlers.append(handler)
  for handler in handlers:
    handler.addFilter(_QuietLibraries())


def upload_logs() -> None:
  """Copies the local copies of remote log files up (a no-op for local logs)."""
  for local_file, remote in _REMOTE_LOGS:
    try:
      with open(local_file, encoding="utf-8") as f:
        workdir_lib.write_text(remote, f.read())
    except OSError as e:  # Storage hiccups must not stop training.
      logging.warning("Could not copy the log %s to %s: %s", local_file, remote, e)


def user_error_message(error: BaseException) -> str:
  """'ErrorType: message' (a KeyError's message without its quotes)."""
  message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
  return f"{type(error).__name__}: {message}"


def exit_with_user_error(error: BaseException) -> NoReturn:
  """Logs `error` and prints it as one `error: ...` line; exits 1."""
  message = user_error_message(error)
  logging.error("%s", message)
  upload_logs()
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(1)


def run_reporting_result(command: Callable[[], dict[str, Any]]) -> None:
  """Runs `command`; prints its result as `RESULT {json}` or a user error.

  A `preemption.Preempted` run exits with `preemption.EXIT_CODE` after one
  line saying where its checkpoint is.
  """
  try:
    result = command()
  except USER_ERRORS as e:
    exit_with_user_error(e)
  except preemption.Preempted as e:
    logging.warning("%s", e)
    upload_logs()
    print(f"{e}; re-run the same command to resume.", file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_CODE)
  upload_logs()
  print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


def log_eval(step: int, seconds: float, result: dict[str, float]) -> None:
  """The eval log line of an evaluator's `result` (trainer and evaluate)."""
  # A supervised run has no teacher: its line names only the student.
  teacher = ("" if "teacher_top1" not in result else
             ", teacher top-1 %.2f%%, agreement %.2f%%" % (
                 result["teacher_top1"], result.get("agreement", float("nan"))))
  logging.info("eval @%d (%.1fs): student top-1 %.2f%% top-5 %.2f%%%s on %d "
               "examples", step, seconds, result["student_top1"],
               result["student_top5"], teacher, result["eval_examples"])
