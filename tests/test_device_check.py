"""The accelerator check and its bundle, on CPU, as the accelerator machine has it.

A sitecustomize in the check's PYTHONPATH makes TensorFlow, TFDS and clu
unimportable and lets absl, ml_collections and yaml come from the bundle only,
and SID_SHARED_DIR points nowhere: what the check needs is in the bundle.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from big_vision_sid import paths

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _script(name: str):
  """benchmarks/<name>.py as a module (the folder is not a package)."""
  spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


pack_device_bundle = _script("pack_device_bundle")
device_check = _script("device_check")

_AS_ON_THE_DEVICE = '''
"""Test guard: no TensorFlow, TFDS or clu; absl, ml_collections, yaml from the bundle."""
import importlib.machinery
import os
import sys

_ABSENT = ("tensorflow", "tensorflow_datasets", "clu")
_BUNDLED = ("absl", "ml_collections", "yaml")
_BUNDLE_PYTHON = os.environ["SID_TEST_BUNDLE_PYTHON"]


class _Finder:

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name in _BUNDLED:
      spec = importlib.machinery.PathFinder.find_spec(name, [_BUNDLE_PYTHON])
      if spec is None:
        raise ModuleNotFoundError(f"No module named '{name}' in the bundle")
      return spec
    return None


# None in sys.modules: imports fail and importlib.util.find_spec says absent.
sys.modules.update(dict.fromkeys(_ABSENT))
sys.meta_path.insert(0, _Finder())
'''


@pytest.fixture(name="bundle", scope="module")
def fixture_bundle(tmp_path_factory):
  if not (paths.shared_dir() / pack_device_bundle.SHARED_FILES[0]).exists():
    pytest.skip("shared teachers not available")
  out = tmp_path_factory.mktemp("device") / "bundle"
  pack_device_bundle.pack(out)
  return out


def _device_env(tmp_path: pathlib.Path, bundle: pathlib.Path) -> dict[str, str]:
  """The environment of the device machine, as far as the check can tell."""
  guard = tmp_path / "guard"
  guard.mkdir(exist_ok=True)
  (guard / "sitecustomize.py").write_text(_AS_ON_THE_DEVICE)
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TFDS_DATA_DIR")}
  env.update(PYTHONPATH=str(guard), SID_TEST_BUNDLE_PYTHON=str(bundle / "python"),
             SID_SHARED_DIR=str(tmp_path / "no_shared"), HOME=str(tmp_path / "home"),
             JAX_PLATFORMS="cpu")
  return env


def _run_check(tmp_path: pathlib.Path, bundle: pathlib.Path, *args: str,
               code: str = "") -> subprocess.CompletedProcess:
  """Runs the check (or `python -c code`) as on the device machine."""
  command = (["-c", code] if code else
             [str(ROOT / "benchmarks" / "device_check.py"), f"--bundle={bundle}", *args])
  return subprocess.run([sys.executable, *command], cwd=tmp_path,
                        env=_device_env(tmp_path, bundle), capture_output=True,
                        text=True, timeout=900)


def test_bundle_holds_the_data_and_pure_python_packages(bundle):
  manifest = json.loads((bundle / pack_device_bundle.MANIFEST).read_text())
  files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
  assert files == sorted([*manifest, pack_device_bundle.MANIFEST])
  for relative, entry in manifest.items():
    assert (bundle / relative).stat().st_size == entry["bytes"]
  teacher = manifest["shared/teachers/cifar10_resnet_akamaster/resnet56-4bfd9763.th"]
  assert teacher["sha256"].startswith("4bfd9763")
  assert "shared/data/cifar10/test_exact.npz" in manifest
  assert "shared/images/city.jpg" in manifest
  for module in ("absl/flags/__init__.py", "ml_collections/config_dict/__init__.py",
                 "yaml/__init__.py"):
    assert f"python/{module}" in manifest
  assert not [f for f in files if "__pycache__" in f or not (
      f.startswith("shared/") or f.endswith(".py") or f == pack_device_bundle.MANIFEST)]
  assert sum(e["bytes"] for e in manifest.values()) < 16 * 2**20


def test_pack_replaces_an_old_bundle_and_names_a_missing_shared_file(tmp_path):
  shared = tmp_path / "shared"
  with pytest.raises(FileNotFoundError, match="resnet56-4bfd9763.th"):
    pack_device_bundle.pack(tmp_path / "bundle", shared)
  for relative in pack_device_bundle.SHARED_FILES:
    (shared / relative).parent.mkdir(parents=True, exist_ok=True)
    (shared / relative).write_bytes(b"stand-in")
  (tmp_path / "bundle").mkdir()
  (tmp_path / "bundle" / "stale.txt").write_text("from an older pack")
  manifest = pack_device_bundle.pack(tmp_path / "bundle", shared)
  assert not (tmp_path / "bundle" / "stale.txt").exists()
  assert manifest["shared/images/city.jpg"]["bytes"] == len(b"stand-in")


def test_the_guard_blocks_tensorflow_and_installed_absl(tmp_path, bundle):
  proc = _run_check(tmp_path, bundle, code=(
      "import absl, ml_collections\n"
      "print(absl.__path__[0]); print(ml_collections.__path__[0])\n"
      "import tensorflow\n"))
  assert "ModuleNotFoundError: import of tensorflow halted" in proc.stderr
  assert proc.stdout.split() == [str(bundle / "python" / "absl"),
                                 str(bundle / "python" / "ml_collections")]


def test_check_imports_everything_it_needs_without_tensorflow(tmp_path, bundle):
  proc = _run_check(tmp_path, bundle, "--part=env")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.splitlines()[-1].removeprefix("PHASE_RESULT "))
  assert result["tensorflow_imported"] is False
  assert result["absl_from"] == str(bundle / "python" / "absl")
  assert result["devices"] == "cpu x1" and result["versions"]["jax"]


def test_parts_run_in_child_processes_within_the_budget(tmp_path, bundle, monkeypatch):
  for key, value in _device_env(tmp_path, bundle).items():
    monkeypatch.setenv(key, value)
  args = argparse.Namespace(bundle=str(bundle), reduced=False)
  env = device_check._in_subprocess("env", args, 0, str(tmp_path), timeout=300)  # pylint: disable=protected-access
  assert env["tensorflow_imported"] is False and env["devices"] == "cpu x1"
  cut = device_check._in_subprocess("row:r56_r20_b512", args, 0, str(tmp_path), timeout=1)  # pylint: disable=protected-access
  assert cut == {"error": "stopped after 1 s (budget)"}
  failed = device_check._in_subprocess("row:no_such_row", args, 0, str(tmp_path), timeout=300)  # pylint: disable=protected-access
  assert "KeyError: 'no_such_row'" in failed["error"]


def test_an_exhausted_budget_still_writes_the_json(tmp_path, bundle):
  out = tmp_path / "check.json"
  proc = _run_check(tmp_path, bundle, "--budget_s=5", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert set(report["summary"]["errors"]) == {
      "env", "distill", "torch", "generator:32", "generator:224",
      *(f"row:{r}" for r in device_check.FULL.rows)}
  assert report["distill"] == {"error": "not run: the time budget was spent"}


@pytest.mark.slow
def test_reduced_check_writes_one_json_without_tensorflow(tmp_path, bundle):
  out = tmp_path / "check.json"
  proc = _run_check(tmp_path, bundle, "--reduced", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["summary"]["errors"] == [] and report["reduced"] is True
  assert report["summary"]["tensorflow imported"] is False
  assert report["env"]["ml_collections_from"] == str(bundle / "python" / "ml_collections")

  row = report["rows"]["r56_r20_b128"]
  assert row["batch"] == 8 and row["pipeline"] == "jax generator on device"
  assert row["synthetic img/s"] > 0 and row["pipeline img/s"] > 0 and row["compile s"] > 0
  assert report["summary"]["generator share of the fed step"]["32 px"]["row"] == "r56_r20_b128"
  for size, batch in ((32, 8), (224, 2)):
    generator = report["generator"][str(size)]
    assert generator["batch"] == batch and generator["ms/batch"] > 0
    assert generator["source"] == str(bundle / "shared" / "images" / "city.jpg")

  distill = report["distill"]
  assert distill["steps"] == 2 and distill["eval_examples"] == 16
  assert distill["teacher"] == "cifar_resnet56" and distill["student"] == "cifar_resnet20"
  # The real teacher from the bundle (92.7% on all 1,017): 16/16 measured here.
  assert distill["teacher_top1"] >= 75
  torch_row = report["torch"]
  if importlib.util.find_spec("torch"):
    assert torch_row["synthetic img/s"] > 0 and torch_row["batch"] == 8
  else:
    assert torch_row == {"skipped": "torch is not installed", "tensorflow_imported": False}
