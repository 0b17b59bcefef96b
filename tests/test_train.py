"""Trainer tests: resume equals an uninterrupted run, bad input fails clearly."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from big_vision_sid import paths
from big_vision_sid import train
from configs import cifar10_r56_r20

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = paths.shared_dir()
TEST_NPZ = SHARED / "data/cifar10/test_exact.npz"


def tiny_config(workdir_source: str = "skimage:astronaut"):
  """cifar_resnet8 student and random teacher on a 16-example eval set."""
  config = cifar10_r56_r20.get_config()
  config.unlock()
  config.teacher.name = "cifar_resnet8"
  config.teacher.format = "random"
  config.teacher.checkpoint = ""
  config.student.name = "cifar_resnet8"
  config.input.source = workdir_source
  config.input.num_patches = 64
  config.input.batch_size = 8
  config.total_epochs = None
  config.total_steps = 6
  config.optim.schedule = "constant"
  config.optim.lr = 1e-3
  config.log_every_steps = 2
  config.checkpoint.every_steps = 3
  config.checkpoint.every_seconds = 0.0
  config.eval.batch_size = 8
  config.eval.max_examples = 16
  return config



def _params(workdir, step):
  from big_vision_sid import checkpointing  # pylint: disable=g-import-not-at-top
  checkpointer = checkpointing.Checkpointer(str(workdir), keep=5, async_save=False)
  try:
    restored = checkpointer._manager.restore(step)  # pylint: disable=protected-access
  finally:
    checkpointer.close()
  return jax.tree.leaves(restored["state"]["params"])


def test_resume_reproduces_uninterrupted_run(tmp_path, eval_npz):
  config = tiny_config()
  config.eval.dataset = eval_npz
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  assert full["steps"] == 6 and full["eval_examples"] == 16

  interrupted = tmp_path / "interrupted"
  config.total_steps = 3
  first = train.train_and_evaluate(config, str(interrupted))
  assert first["steps"] == 3
  config.total_steps = 6
  # A save that a SIGKILL interrupted leaves a temporary directory behind.
  unfinished = interrupted / "checkpoints" / "4.orbax-checkpoint-tmp"
  (unfinished / "state").mkdir(parents=True)
  resumed = train.train_and_evaluate(config, str(interrupted))
  assert not unfinished.exists()
  assert resumed["steps"] == 6 and resumed["steps_this_run"] == 3

  for a, b in zip(_params(tmp_path / "full", 6), _params(interrupted, 6)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert resumed["student_top1"] == pytest.approx(full["student_top1"])
  lines = [json.loads(l) for l in (interrupted / "metrics.jsonl").read_text().splitlines()]
  assert {l["step"] for l in lines if "loss" in l} == {2, 3, 4, 6}
  assert json.loads((interrupted / "result.json").read_text())["steps"] == 6


def test_non_finite_loss_stops_without_saving_bad_state(tmp_path, eval_npz, monkeypatch):
  config = tiny_config()
  config.eval.dataset = eval_npz
  real_make_optimizer = train.optim.make_optimizer

  def exploding_optimizer(optim_cfg, total_steps):
    import optax  # pylint: disable=g-import-not-at-top
    tx, schedule = real_make_optimizer(optim_cfg, total_steps)
    # Finite for three steps (one checkpoint at step 3), then inf updates.
    blowup = optax.scale_by_schedule(lambda step: jax.numpy.where(step < 3, 1.0, np.inf))
    return optax.chain(tx, blowup), schedule

  monkeypatch.setattr(train.optim, "make_optimizer", exploding_optimizer)
  with pytest.raises(train.NonFiniteLossError, match="(?i)non-finite"):
    train.train_and_evaluate(config, str(tmp_path))
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [3]
  assert all(np.isfinite(np.asarray(x)).all() for x in _params(tmp_path, 3))


def _run_cli(*args, env_extra=None, timeout=300):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run(
      [sys.executable, "-m", "big_vision_sid.train", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("override, expected", [
    ("--config.input.source=/nonexistent/image.jpg", "/nonexistent/image.jpg"),
    ("--config.eval.dataset=cifar11_test", "cifar11_test"),
    ("--config.distill.loss=kl_typo", "kl_typo"),
    ("--config.no_such_key=1", "no_such_key"),
])
def test_cli_bad_input_fails_with_one_clear_line(tmp_path, override, expected):
  proc = _run_cli("--config=configs/cifar10_r56_r20.py:cpu_demo",
                  f"--workdir={tmp_path}", override)
  assert proc.returncode == 1, proc.stderr[-3000:]
  last_line = proc.stderr.strip().splitlines()[-1]
  assert expected in last_line, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "checkpoints").exists() or not any(
      (tmp_path / "checkpoints").iterdir())


def test_cli_teacher_shape_mismatch_names_the_keys(tmp_path):
  # The demo's teacher is a ResNet-20: a ResNet-56 checkpoint does not fit it.
  r56 = SHARED / "teachers/cifar10_resnet_akamaster/resnet56-4bfd9763.th"
  if not r56.exists():
    pytest.skip("shared teachers not available")
  proc = _run_cli("--config=configs/cifar10_r56_r20.py:cpu_demo", f"--workdir={tmp_path}",
                  f"--config.teacher.checkpoint={r56}", "--config.total_steps=2")
  assert proc.returncode == 1, proc.stderr[-3000:]
  last_line = proc.stderr.strip().splitlines()[-1]
  assert "layer1.3" in last_line or "layer1.3" in proc.stderr, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_real_teacher_end_to_end_with_four_devices(tmp_path):
  """R56 -> R20 on 4 CPU devices: the RESULT line, and the exact teacher accuracy."""
  if not TEST_NPZ.exists():
    pytest.skip("shared data not available")
  r56 = SHARED / "teachers/cifar10_resnet_akamaster/resnet56-4bfd9763.th"
  proc = _run_cli(
      "--config=configs/cifar10_r56_r20.py:cpu_demo", f"--workdir={tmp_path}",
      "--config.teacher.name=cifar_resnet56", f"--config.teacher.checkpoint={r56}",
      "--config.total_steps=4", "--config.input.batch_size=16",
      "--config.log_every_steps=2",
      env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result_lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert len(result_lines) == 1
  result = json.loads(result_lines[0][len("RESULT "):])
  assert result["teacher_top1"] == pytest.approx(92.72, abs=0.01)
  assert result["eval_examples"] == 1017 and result["steps"] == 4
  assert result["device"] == "cpu x4"
  for key in ("student_top1", "agreement", "images_per_sec"):
    assert key in result
  assert (tmp_path / "result.json").exists() and (tmp_path / "metrics.jsonl").exists()


def test_supervised_training_exports_a_loadable_teacher(tmp_path, eval_npz):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from big_vision_sid import teachers  # pylint: disable=g-import-not-at-top
  from configs import cifar10_supervised_teacher  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for class_name in ("cat", "dog"):
    (tmp_path / "data" / class_name).mkdir(parents=True)
    for i in range(4):
      pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(tmp_path / "data" / class_name / f"{i}.png")
  config = cifar10_supervised_teacher.get_config()
  config.unlock()
  config.student.name = "cifar_resnet8"
  config.input.source = f"dataset:folder:{tmp_path / 'data'}"
  config.input.batch_size = 4
  config.total_epochs = None
  config.total_steps = 3
  config.eval.dataset = eval_npz
  config.eval.batch_size = 8
  config.eval.max_examples = 8
  workdir = tmp_path / "workdir"
  result = train.train_and_evaluate(config, str(workdir))
  assert result["steps"] == 3 and "teacher_top1" not in result
  teacher_config = config.teacher.copy_and_resolve_references()
  teacher_config.update(format="flax", checkpoint=str(workdir / "teacher.msgpack"))
  teacher = teachers.load_teacher(teacher_config)
  assert teacher.name == "cifar_resnet8"
  assert teacher.num_classes == 10
