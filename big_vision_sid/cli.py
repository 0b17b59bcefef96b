"""What every command-line entry point shares: logs, errors, the RESULT line.

`train`, `evaluate` and `export` report a user's mistake (a bad config value,
a missing file, a checkpoint that does not fit) as ONE line on stderr and exit
1; everything else is a bug and keeps its traceback. Each ends with one
machine-readable `RESULT {json}` line on stdout.
"""

import json
import logging as std_logging
import sys
from typing import Any, Callable, NoReturn

from absl import logging


class NonFiniteLossError(RuntimeError):
  """The loss or the parameters became NaN/inf; nothing non-finite is saved."""


# Errors caused by the user's input (config, files): reported as one clear line.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NonFiniteLossError)


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of orbax (a dozen lines per save or restore)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def setup_logging(log_file: str | None = None) -> None:
  """absl logs to stderr (and to `log_file` if given), without orbax's INFO."""
  handlers = [logging.get_absl_handler()]
  if log_file:
    handler = std_logging.FileHandler(log_file)
    handler.setFormatter(
        std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.get_absl_logger().addHandler(handler)
    handlers.append(handler)
  for handler in handlers:
    handler.addFilter(_QuietLibraries())


def user_error_message(error: BaseException) -> str:
  """'ErrorType: message' (a KeyError's message without its quotes)."""
  message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
  return f"{type(error).__name__}: {message}"


def exit_with_user_error(error: BaseException) -> NoReturn:
  """Logs `error` and prints it as one `error: ...` line; exits 1."""
  message = user_error_message(error)
  logging.error("%s", message)
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(1)


def run_reporting_result(command: Callable[[], dict[str, Any]]) -> None:
  """Runs `command`; prints its result as `RESULT {json}` or a user error."""
  try:
    result = command()
  except USER_ERRORS as e:
    exit_with_user_error(e)
  print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


def log_eval(step: int, seconds: float, result: dict[str, float]) -> None:
  """The eval log line of an evaluator's `result` (trainer and evaluate)."""
  logging.info(
      "eval @%d (%.1fs): student top-1 %.2f%% top-5 %.2f%%, teacher top-1 "
      "%.2f%%, agreement %.2f%% on %d examples", step, seconds,
      result["student_top1"], result["student_top5"],
      result.get("teacher_top1", float("nan")),
      result.get("agreement", float("nan")), result["eval_examples"])
