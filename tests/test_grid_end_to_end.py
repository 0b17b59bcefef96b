"""A CI-sized grid: the real trainer through the sweep runner, then the report."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mini_grid_runs_and_report_renders(tmp_path):
  grid, report = tmp_path / "grid", tmp_path / "report"
  tiny = [
      "--set=teacher.name=cifar_resnet8", "--set=teacher.format=random",
      "--set=student.name=cifar_resnet8", "--set=total_steps=2",
      "--set=input.batch_size=8", "--set=log_every_steps=1",
      "--set=eval.batch_size=8", "--set=eval.max_examples=16",
      "--set=input.source=skimage:astronaut",
  ]
  sweep = subprocess.run(
      [sys.executable, "-m", "big_vision_sid.sweep",
       "--config=configs/cifar10_r56_r20.py:cpu_demo", f"--workdir_root={grid}",
       "--sweep=distill.loss=[kl,hard]", *tiny],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
  cells = sorted(p.name for p in grid.iterdir() if p.is_dir())
  assert cells == ["loss=hard", "loss=kl"]
  for cell in cells:
    result = json.loads((grid / cell / "result.json").read_text())
    assert result["steps"] == 2 and result["eval_examples"] == 16

  render = subprocess.run(
      [sys.executable, "-m", "big_vision_sid.report", f"--workdirs={grid}/*",
       f"--out={report}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert render.returncode == 0, render.stderr[-3000:]
  table = (report / "report.md").read_text()
  assert "distill.loss=kl" in table and "distill.loss=hard" in table
  assert (report / "accuracy_vs_step.png").stat().st_size > 1000
  assert (report / "bar_distill.loss.png").exists()
