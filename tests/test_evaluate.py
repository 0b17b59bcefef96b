"""`python -m big_vision_sid.evaluate`: reproduces a finished run, read-only."""

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from big_vision_sid import cli
from big_vision_sid import evaluate
from big_vision_sid import train
from big_vision_sid import train_step
from big_vision_sid import workdir as workdir_lib
from test_train import tiny_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
_COMPARED = ("student_top1", "student_top5", "teacher_top1", "teacher_top5",
             "agreement", "eval_examples")


def _random_images(seed: int, count: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(name="run", scope="module")
def fixture_run(tmp_path_factory):
  """A finished tiny run (checkpoints at steps 3 and 6) and a second eval set."""
  root = tmp_path_factory.mktemp("evaluate")
  npz = root / "eval.npz"
  np.savez(npz, image=_random_images(0, 20),
           label=np.random.default_rng(1).integers(0, 10, 20))
  # Another scheme: 3 class folders of 4 PNGs (labels 0, 1, 2).
  folder = root / "folder"
  images = _random_images(2, 12)
  for index, image in enumerate(images):
    class_dir = folder / f"class_{index // 4}"
    class_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(class_dir / f"{index:02d}.png")
  config = tiny_config()
  config.eval.dataset = f"npz:{npz}"
  workdir = root / "run"
  result = train.train_and_evaluate(config, str(workdir))
  return {"workdir": workdir, "result": result, "dataset": f"npz:{npz}",
          "folder": f"folder:{folder}", "folder_images": images,
          "folder_labels": np.repeat(np.arange(3), 4)}


def _snapshot(directory: pathlib.Path) -> dict[str, tuple]:
  """Every path under `directory` with its mtime and (for files) content hash."""
  snapshot = {}
  for path in sorted(directory.rglob("*")):
    stat = path.stat()
    digest = (hashlib.sha256(path.read_bytes()).hexdigest()
              if path.is_file() else None)
    snapshot[str(path.relative_to(directory))] = (stat.st_mtime_ns, digest)
  return snapshot


def _evaluate_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "big_vision_sid.evaluate", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_reproduces_the_run_without_writing_to_it(run, tmp_path):
  workdir = run["workdir"]
  # A trainer saving right now leaves an unfinished save; it must stay.
  (workdir / "checkpoints" / "9.orbax-checkpoint-tmp" / "state").mkdir(
      parents=True)
  before = _snapshot(workdir)
  out = tmp_path / "eval.json"
  completed = _evaluate_cli(f"--workdir={workdir}", f"--out={out}")
  assert completed.returncode == 0, completed.stderr
  assert _snapshot(workdir) == before
  assert "eval @6 (" in completed.stderr
  result_lines = [line for line in completed.stdout.splitlines()
                  if line.startswith("RESULT ")]
  assert len(result_lines) == 1
  printed = json.loads(result_lines[0][len("RESULT "):])
  trained = json.loads((workdir / "result.json").read_text())
  assert {k: printed[k] for k in _COMPARED} == {k: trained[k] for k in _COMPARED}
  assert printed["eval_examples"] == 16  # tiny_config's eval.max_examples.
  assert printed["step"] == 6 and printed["dataset"] == run["dataset"]
  assert printed["workdir"] == str(workdir)
  assert json.loads(out.read_text()) == printed


def _reference_metrics(finished, images: np.ndarray, labels: np.ndarray):
  """Top-1/top-5/agreement in numpy from un-jitted forward passes."""
  target = finished.target
  x = train_step.normalize(images.astype(np.float32) / 255.0, target.mean,
                           target.std)
  student = np.asarray(finished.student.apply(finished.variables, x,
                                              train=False))
  teacher = np.asarray(target.predict(target.variables, x))
  top5 = np.argsort(-student, axis=-1)[:, :5]
  count = len(labels)
  return {
      "student_top1": 100.0 * np.sum(student.argmax(-1) == labels) / count,
      "student_top5": 100.0 * np.sum((top5 == labels[:, None]).any(-1)) / count,
      "teacher_top1": 100.0 * np.sum(teacher.argmax(-1) == labels) / count,
      "agreement": 100.0 * np.sum(student.argmax(-1) == teacher.argmax(-1)) / count,
      "eval_examples": count,
  }


@pytest.mark.slow
def test_another_dataset_step_and_max_examples(run):
  workdir = str(run["workdir"])
  finished = workdir_lib.load_run(workdir)
  assert finished.step == 6 and finished.steps == [3, 6]
  assert finished.result["steps"] == 6
  images, labels = run["folder_images"], run["folder_labels"]
  result = evaluate.evaluate_run(workdir, dataset=run["folder"], max_examples=0)
  expected = _reference_metrics(finished, images, labels)
  assert {k: result[k] for k in expected} == pytest.approx(expected)
  assert result["step"] == 6 and result["dataset"] == run["folder"]

  # Batch size 5 pads the last of three batches; max_examples keeps the first.
  result = evaluate.evaluate_run(workdir, dataset=run["folder"], step=3,
                                 batch_size=5, max_examples=11)
  at_step_3 = workdir_lib.load_run(workdir, step=3)
  assert result["step"] == at_step_3.step == 3
  expected = _reference_metrics(at_step_3, images[:11], labels[:11])
  assert {k: result[k] for k in expected} == pytest.approx(expected)
  assert not all(
      np.array_equal(a, b) for a, b in zip(
          jax.tree.leaves(at_step_3.variables),
          jax.tree.leaves(finished.variables)))


@pytest.mark.slow
def test_supervised_run_new_and_legacy_config(run, tmp_path):
  """A run without a teacher (target='labels'; older: teacher.format='none')."""
  config = tiny_config()
  config.target = "labels"
  config.input.source = "dataset:" + run["folder"]
  config.input.cache_dir = str(tmp_path / "cache")
  config.mixing.mode = "none"
  config.distill.loss = "cross_entropy"
  config.eval.dataset = run["folder"]
  workdir = tmp_path / "supervised"
  trained = train.train_and_evaluate(config, str(workdir))
  assert "teacher_top1" not in trained and trained["eval_examples"] == 12

  legacy = tmp_path / "legacy"
  shutil.copytree(workdir, legacy)
  legacy_config = workdir_lib.read_json(legacy / workdir_lib.CONFIG_FILE)
  del legacy_config["target"]
  legacy_config["teacher"]["format"] = "none"
  workdir_lib.write_json(legacy / workdir_lib.CONFIG_FILE, legacy_config)
  for directory in (workdir, legacy):
    result = evaluate.evaluate_run(str(directory))
    assert workdir_lib.load_run(str(directory)).target.predict is None
    assert {k: result[k] for k in _COMPARED if k in trained} == {
        k: trained[k] for k in _COMPARED if k in trained}
    assert "teacher_top1" not in result and "agreement" not in result


@pytest.mark.slow
@pytest.mark.parametrize("flag, message", [
    ("--dataset=cifar11_test",
     "Eval dataset spec 'cifar11_test' must look like 'scheme:argument'"),
    ("--dataset=npz:/nonexistent/test.npz", "/nonexistent/test.npz"),
    ("--step=4", "has no checkpoint at step 4; available steps: 3, 6."),
])
def test_cli_errors_on_a_run(run, flag, message):
  completed = _evaluate_cli(f"--workdir={run['workdir']}", flag)
  _assert_one_error_line(completed, message)


def test_cli_error_for_a_missing_workdir(tmp_path):
  completed = _evaluate_cli(f"--workdir={tmp_path / 'absent'}")
  _assert_one_error_line(completed, f"Workdir {tmp_path / 'absent'} does not exist.")


def _assert_one_error_line(completed: subprocess.CompletedProcess,
                           message: str) -> None:
  assert completed.returncode != 0
  assert "Traceback" not in completed.stderr
  errors = [line for line in completed.stderr.splitlines()
            if line.startswith("error: ")]
  assert len(errors) == 1 and message in errors[0], completed.stderr
  assert "RESULT" not in completed.stdout


def test_eval_log_line_names_the_teacher_only_when_there_is_one(caplog):
  caplog.set_level("INFO")
  distilled = dict(student_top1=50.0, student_top5=90.0, teacher_top1=92.5,
                   agreement=51.25, eval_examples=8)
  supervised = dict(student_top1=99.0, student_top5=100.0, eval_examples=600)
  cli.log_eval(7, 1.0, distilled)
  cli.log_eval(9, 1.0, supervised)
  lines = [r.getMessage() for r in caplog.records if "eval @" in r.getMessage()]
  assert lines == [
      "eval @7 (1.0s): student top-1 50.00% top-5 90.00%, teacher top-1 "
      "92.50%, agreement 51.25% on 8 examples",
      "eval @9 (1.0s): student top-1 99.00% top-5 100.00% on 600 examples"]
