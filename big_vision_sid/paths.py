"""Where the project finds shared data and teachers (`$SID_SHARED_DIR`)."""

import os
import pathlib

_PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


def shared_dir() -> pathlib.Path:
  """`$SID_SHARED_DIR`, or `../shared` next to the project checkout."""
  env = os.environ.get("SID_SHARED_DIR")
  if env:
    return pathlib.Path(env).expanduser().resolve()
  return (_PROJECT_ROOT.parent / "shared").resolve()


def expand(path: str) -> str:
  """Expands `$SID_SHARED_DIR` (defaulted as in `shared_dir`), `~` and env vars."""
  path = path.replace("$SID_SHARED_DIR", str(shared_dir()))
  path = path.replace("${SID_SHARED_DIR}", str(shared_dir()))
  return os.path.expanduser(os.path.expandvars(path))
