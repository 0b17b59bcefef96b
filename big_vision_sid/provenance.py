"""What produced a run: the code's git commit, package versions, the devices.

Recorded in `config.json` and `result.json` under "provenance", so a number
can be traced back to the exact code and machine. Everything is best effort:
without git, outside a checkout (an installed package) or with a package
missing, the entry is None or left out; collecting never fails a run.
Package versions come from importlib.metadata, so TensorFlow is not imported.
"""

import functools
import importlib.metadata
import pathlib
import platform
import subprocess
from typing import Any

# The distributions whose versions are recorded; TensorFlow under any of its
# distribution names.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "ml_collections", "etils")
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos",
                            "tf-nightly")
_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
_GIT_TIMEOUT_SECONDS = 10


def _git(*args: str) -> str | None:
  try:
    # --no-optional-locks: never take .git/index.lock (a concurrent commit).
    completed = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(_REPO_ROOT), *args],
        capture_output=True, text=True, timeout=_GIT_TIMEOUT_SECONDS,
        check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return completed.stdout.strip()


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any] | None:
  """{"commit": sha, "dirty": bool} of the checkout holding this code, or None.

  None when git is missing or this package does not sit at the top of a git
  checkout (e.g. installed into site-packages, even one inside another repo).
  "dirty" counts modified and untracked files (ignored ones excepted).
  """
  top = _git("rev-parse", "--show-toplevel")
  if top is None or pathlib.Path(top).resolve() != _REPO_ROOT:
    return None
  commit = _git("rev-parse", "HEAD")
  status = _git("status", "--porcelain")
  if not commit or status is None:
    return None
  return {"commit": commit, "dirty": bool(status)}


def package_versions() -> dict[str, str]:
  """Installed versions of `PACKAGES` and TensorFlow (absent ones left out)."""
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  for name in TENSORFLOW_DISTRIBUTIONS:
    try:
      versions["tensorflow"] = importlib.metadata.version(name)
      break
    except importlib.metadata.PackageNotFoundError:
      pass
  return versions


def collect() -> dict[str, Any]:
  """The provenance record (see the module docstring); JSON-serialisable."""
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  return {
      "git": git_state(),
      "packages": package_versions(),
      "python": platform.python_version(),
      "platform": devices[0].platform,
      "device_kind": devices[0].device_kind,
      "device_count": len(devices),
      "local_device_count": jax.local_device_count(),
      "process_count": jax.process_count(),
  }
