r"""Packs what benchmarks/device_check.py needs into one folder.

  python benchmarks/pack_device_bundle.py [--out=workdirs/device_bundle]

The accelerator machine has JAX, flax, optax, orbax, numpy and torch, but no
../shared and maybe no absl, ml_collections or PyYAML. The bundle holds

  shared/teachers/cifar10_resnet_akamaster/resnet56-4bfd9763.th
  shared/data/cifar10/test_exact.npz
  shared/images/city.jpg
  python/absl/, python/ml_collections/, python/yaml/   (.py files only)
  MANIFEST.json                                        (size and sha256 of each file)

shared/ is laid out like ../shared, so SID_SHARED_DIR=<bundle>/shared serves
the configs unchanged. The default folder is under workdirs/, which git
ignores, so it travels only when the device tool's `carry` names it (about
9 MiB of its 64 MiB).
"""

import argparse
import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_sid import paths
from configs import common
# pylint: enable=g-import-not-at-top,wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "workdirs" / "device_bundle"
MANIFEST = "MANIFEST.json"
# Paths relative to the shared folder, as the configs name them.
SHARED_FILES = (
    f"teachers/cifar10_resnet_akamaster/{common.AKAMASTER_FILES[56]}",
    "data/cifar10/test_exact.npz",
    "images/city.jpg",
)
# Pure-Python packages the project imports that the device machine may lack.
PACKAGES = ("absl", "ml_collections", "yaml")
_SKIPPED_DIRS = ("__pycache__", "tests", "testing", "examples")
# The device tool carries at most 64 MiB; the working tree needs some of it.
MAX_BYTES = 32 * 2**20


def _package_sources(name: str) -> pathlib.Path:
  spec = importlib.util.find_spec(name)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"Package '{name}' is not installed here; install requirements.txt first.")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def _python_files(package_dir: pathlib.Path):
  for path in sorted(package_dir.rglob("*.py")):
    relative = path.relative_to(package_dir)
    if any(part in _SKIPPED_DIRS for part in relative.parts[:-1]):
      continue
    if path.name == "conftest.py" or path.name.endswith("_test.py"):
      continue
    yield relative


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def pack(out: pathlib.Path, shared: pathlib.Path | None = None) -> dict[str, dict]:
  """Writes the bundle to `out` (replacing it); returns its manifest.

  Args:
    out: the bundle folder.
    shared: where the data and teacher are read; `paths.shared_dir()` if None.

  Returns:
    Relative path -> {"bytes": size, "sha256": digest}, also in MANIFEST.json.

  Raises:
    FileNotFoundError: a shared file or a package is missing.
    ValueError: the bundle would exceed MAX_BYTES.
  """
  shared = shared or paths.shared_dir()
  missing = [f for f in SHARED_FILES if not (shared / f).is_file()]
  if missing:
    raise FileNotFoundError(f"{shared} lacks {', '.join(missing)} (set SID_SHARED_DIR).")
  sources = {name: _package_sources(name) for name in PACKAGES}
  if out.exists():
    shutil.rmtree(out)
  copies = [(shared / f, pathlib.Path("shared") / f) for f in SHARED_FILES]
  for name, package_dir in sources.items():
    copies += [(package_dir / f, pathlib.Path("python") / name / f)
               for f in _python_files(package_dir)]
  manifest = {}
  for source, relative in copies:
    (out / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out / relative)
    manifest[str(relative)] = {"bytes": source.stat().st_size, "sha256": _sha256(source)}
  total = sum(entry["bytes"] for entry in manifest.values())
  if total > MAX_BYTES:
    shutil.rmtree(out)
    raise ValueError(f"The bundle would hold {total / 2**20:.1f} MiB, more than "
                     f"{MAX_BYTES / 2**20:.0f} MiB.")
  (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
  return manifest


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=str(DEFAULT_OUT), help="The bundle folder.")
  args = parser.parse_args()
  try:
    manifest = pack(pathlib.Path(args.out))
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  by_part: dict[str, int] = {}
  for relative, entry in manifest.items():
    part = "/".join(pathlib.Path(relative).parts[:2])
    by_part[part] = by_part.get(part, 0) + entry["bytes"]
  for part, size in sorted(by_part.items()):
    print(f"{size / 2**20:8.2f} MiB  {part}")
  total = sum(by_part.values())
  print(f"{total / 2**20:8.2f} MiB  in {len(manifest)} files: {args.out}")


if __name__ == "__main__":
  main()
