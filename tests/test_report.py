"""Tests for the results report on fake run workdirs."""

import json
import pathlib
import subprocess
import sys

from PIL import Image
import pytest

from big_vision_sid import report

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _config(loss: str, source: str) -> dict:
  return {"distill": {"loss": loss, "temperature": 8.0},
          "input": {"source": source, "crop_scale": [0.08, 1.0]},
          "total_steps": 100, "seed": 0}


def _eval(step: int, top1: float) -> dict:
  return {"step": step, "student_top1": top1, "student_top5": top1 + 20,
          "teacher_top1": 91.64, "teacher_top5": 99.5, "agreement": top1 + 1,
          "eval_examples": 1017}


def _train(step: int, elapsed: float) -> dict:
  return {"step": step, "loss": 1.0 / step, "lr": 0.1, "img_per_sec": 500.0,
          "elapsed_s": elapsed}


def _write_run(workdir: pathlib.Path, config: dict, metrics: list,
               result: dict | None, tail: str = "") -> pathlib.Path:
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(config))
  (workdir / "metrics.jsonl").write_text(
      "".join(json.dumps(m) + "\n" for m in metrics) + tail)
  if result is not None:
    (workdir / "result.json").write_text(json.dumps(result))
  return workdir


def _result(top1: float, steps: int, wall: float) -> dict:
  return {"teacher_top1": 91.64, "teacher_top5": 99.5, "student_top1": top1,
          "student_top5": top1 + 20, "agreement": top1 + 1, "steps": steps,
          "images_per_sec": 500.0, "eval_examples": 1017,
          "train_seconds": wall - 5, "wall_seconds": wall, "device": "cpu x1",
          "config": "configs/cifar10.py"}


@pytest.fixture
def runs_root(tmp_path) -> pathlib.Path:
  """Two finished runs and one unfinished, resumed run (a repeated step)."""
  root = tmp_path / "sweep"
  _write_run(root / "loss=kl", _config("kl", "/data/images/city.jpg"),
             [_train(50, 30.0), _eval(50, 40.0), _train(100, 60.0),
              _eval(100, 71.25)],
             _result(71.25, 100, 185.0))
  _write_run(root / "loss=l1", _config("l1", "/data/images/city.jpg"),
             [_train(100, 60.0), _eval(100, 55.5)],
             _result(55.5, 100, 3725.0))
  # Resumed after step 30: steps 20..30 logged again; killed mid-write.
  _write_run(root / "source=astronaut",
             _config("kl", "/data/images/astronaut.png"),
             [_train(10, 5.0), _eval(20, 20.0), _train(20, 10.0),
              _train(30, 15.0), _train(20, 11.0), _eval(20, 25.5),
              _train(30, 16.0)],
             None, tail='{"step": 40, "lo')
  (root / "sweep.json").write_text("{}")
  (root / "empty_dir").mkdir()
  return root


def _table_rows(markdown: str) -> list[list[str]]:
  lines = [l for l in markdown.splitlines() if l.startswith("|")]
  return [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:]]


def test_load_run_keeps_last_line_per_step(runs_root):
  run = report.load_run(runs_root / "source=astronaut")
  assert not run.finished
  assert [m["step"] for m in run.train] == [10, 20, 30]
  assert [m["elapsed_s"] for m in run.train] == [5.0, 11.0, 16.0]
  assert [(m["step"], m["student_top1"]) for m in run.evals] == [(20, 25.5)]
  assert run.last_step == 30
  finished = report.load_run(runs_root / "loss=kl")
  assert finished.finished and finished.result["steps"] == 100


def test_load_run_errors_name_the_file(tmp_path):
  with pytest.raises(ValueError, match="no config.json or metrics.jsonl"):
    report.load_run(tmp_path)
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not valid JSON"):
    report.load_run(tmp_path)
  (tmp_path / "metrics.jsonl").write_text('{"loss": 1}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:1 has no 'step'"):
    report.load_run(tmp_path)


def test_find_workdirs_keeps_only_runs(runs_root):
  found = report.find_workdirs([str(runs_root / "*"), str(runs_root / "loss=*")])
  assert [p.name for p in found] == ["loss=kl", "loss=l1", "source=astronaut"]


def test_varying_keys():
  def run(config):
    return report.Run(pathlib.Path("x"), config, [], [], None)
  a = run({"m": {"depth": 20, "width": 1}, "crop": [0.1, 1.0]})
  b = run({"m": {"depth": 56, "width": 1}, "crop": [0.1, 1.0]})
  c = run({"m": {"depth": 20, "width": 1}, "crop": [0.5, 1.0], "extra": 1})
  assert report.varying_keys([a, b]) == ["m.depth"]
  assert report.varying_keys([a, b, c]) == ["crop", "extra", "m.depth"]
  assert report.varying_keys([a]) == []


@pytest.mark.parametrize("seconds, expected", [
    (None, "-"), (42.4, "42s"), (185, "3m05s"), (3725, "1h02m")])
def test_format_duration(seconds, expected):
  assert report.format_duration(seconds) == expected


def test_write_report(runs_root, tmp_path):
  runs = [report.load_run(p) for p in report.find_workdirs([str(runs_root / "*")])]
  out = tmp_path / "report"
  path = report.write_report(runs, out)
  markdown = path.read_text()
  rows = _table_rows(markdown)
  assert len(rows) == 3
  header = [c.strip() for c in markdown.splitlines()[
      [i for i, l in enumerate(markdown.splitlines()) if l.startswith("|")][0]
  ].strip("|").split("|")]
  by_run = {row[0]: dict(zip(header, row)) for row in rows}

  kl = by_run["loss=kl"]
  assert kl["setting"] == "distill.loss=kl, input.source=city.jpg"
  assert (kl["teacher top-1"], kl["student top-1"], kl["student top-5"],
          kl["agreement"]) == ("91.64", "71.25", "91.25", "72.25")
  assert (kl["steps"], kl["wall time"], kl["device"], kl["status"]) == (
      "100", "3m05s", "cpu x1", "finished")
  assert by_run["loss=l1"]["wall time"] == "1h02m"

  unfinished = by_run["source=astronaut"]
  assert unfinished["setting"] == "distill.loss=kl, input.source=astronaut.png"
  assert unfinished["status"] == "unfinished (last step 30, last eval 25.50%)"
  assert (unfinished["student top-1"], unfinished["steps"],
          unfinished["wall time"]) == ("25.50", "30", "16s")

  saved = json.loads((out / "report.json").read_text())
  assert saved["varying_keys"] == ["distill.loss", "input.source"]
  assert [r["student_top1"] for r in saved["rows"]] == [71.25, 55.5, 25.5]
  assert [r["finished"] for r in saved["rows"]] == [True, True, False]

  for name in ("accuracy_vs_step.png", "bar_distill.loss.png",
               "bar_input.source.png"):
    assert f"]({name})" in markdown
    with Image.open(out / name) as image:
      assert image.format == "PNG"
      image.verify()
  assert sorted(p.name for p in out.glob("*.png")) == [
      "accuracy_vs_step.png", "bar_distill.loss.png", "bar_input.source.png"]


def test_write_report_rejects_no_runs(tmp_path):
  with pytest.raises(ValueError, match="No runs"):
    report.write_report([], tmp_path)


def test_command_line(runs_root, tmp_path):
  out = tmp_path / "cli_report"
  completed = subprocess.run(
      [sys.executable, "-m", "big_vision_sid.report",
       f"--workdirs={runs_root}/loss=*", f"--out={out}"],
      cwd=_REPO_ROOT, capture_output=True, text=True, check=True)
  assert "2 runs" in completed.stdout
  assert len(_table_rows((out / "report.md").read_text())) == 2


def test_importing_defines_no_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  assert "workdirs" not in flags.FLAGS


def test_provenance_does_not_count_as_a_varying_setting(tmp_path):
  runs = []
  for i, commit in enumerate(("abc", "def")):
    config = {"seed": i, "provenance": {"git": {"commit": commit}}}
    runs.append(report.Run(workdir=tmp_path / str(i), config=config, result=None,
                           evals=[], train=[]))
  assert report.varying_keys(runs) == ["seed"]


def _curve_run(root: pathlib.Path, name: str, batch: int, evals: list,
               result: dict | None) -> report.Run:
  config = {"input": {"batch_size": batch}, "seed": 0}
  return report.load_run(_write_run(root / name, config, evals, result))


def test_curve_points_convert_steps_to_images(tmp_path):
  run = _curve_run(tmp_path, "curve", 128, [_eval(400, 30.0), _eval(800, 45.5)],
                   _result(50.25, 1000, 600.0))
  assert report.curve_points(run) == [(400, 51_200, 30.0), (800, 102_400, 45.5),
                                      (1000, 128_000, 50.25)]
  no_batch = report.Run(tmp_path / "x", {"input": {}}, [], [_eval(1, 1.0)], None)
  with pytest.raises(ValueError, match="no input.batch_size"):
    report.curve_points(no_batch)


def test_parse_reference():
  assert report.parse_reference("90.7:paper, 1,000 epochs") == (
      90.7, "paper, 1,000 epochs")
  assert report.parse_reference("90.7") == (90.7, "90.7%")
  with pytest.raises(ValueError, match="TOP1:label"):
    report.parse_reference("paper:90.7")


def test_write_report_with_curve(tmp_path):
  curve_run = _curve_run(tmp_path, "curve", 100,
                         [_eval(300, 30.0), _eval(600, 60.0)], None)
  demo = _curve_run(tmp_path, "demo", 50, [], _result(40.0, 600, 300.0))
  # 250 images/s: 30,000 images = 2.0 minutes, 60,000 = 4.0.
  curve = report.CurveOptions(images_per_sec=250.0, marks=[demo],
                              reference=(90.7, "paper"))
  path = report.write_report([curve_run], tmp_path / "out", curve)
  markdown = path.read_text()
  assert "| curve | 300 | 30,000 | 2.0 | 30.00 |" in markdown
  assert "| curve | 600 | 60,000 | 4.0 | 60.00 |" in markdown
  assert "| demo | 600 | 30,000 | 2.0 | 40.00 |" in markdown
  with Image.open(tmp_path / "out" / "accuracy_vs_images.png") as png:
    assert png.size == (750, 480)


def test_command_line_curve(tmp_path):
  _curve_run(tmp_path, "curve", 100, [_eval(300, 30.0)], None)
  out = tmp_path / "cli_curve"
  completed = subprocess.run(
      [sys.executable, "-m", "big_vision_sid.report",
       f"--workdirs={tmp_path}/curve", f"--out={out}",
       "--curve_images_per_sec=100", "--curve_reference=90.7:paper"],
      cwd=_REPO_ROOT, capture_output=True, text=True, check=True)
  assert "1 runs" in completed.stdout
  assert "| curve | 300 | 30,000 | 5.0 | 30.00 |" in (out / "report.md").read_text()
  bad = subprocess.run(
      [sys.executable, "-m", "big_vision_sid.report",
       f"--workdirs={tmp_path}/curve", f"--out={out}",
       "--curve_images_per_sec=0"],
      cwd=_REPO_ROOT, capture_output=True, text=True)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1] == (
      "error: ValueError: --curve_images_per_sec must be > 0.")


def test_pivot_grid_lists_seeds_per_cell(tmp_path):
  def run(name, source, sparsity, seed, top1, finished=True):
    config = {"input": {"source": source}, "compress": {"sparsity": sparsity},
              "seed": seed}
    result = {**_result(top1, 300, 60.0), "agreement": top1 + 2} if finished else None
    return report.load_run(_write_run(tmp_path / name, config, [], result))

  runs = [run("a", "/x/city.jpg", 0.5, 1, 92.0), run("b", "/x/city.jpg", 0.5, 0, 91.5),
          run("c", "/x/city.jpg", 0.75, 0, 88.25), run("d", "noise", 0.5, 0, 80.0),
          run("e", "noise", 0.75, 0, 10.0, finished=False)]
  markdown = report.pivot_markdown(runs, ["input.source"], ["compress.sparsity"])
  rows = _table_rows(markdown)
  header = [l for l in markdown.splitlines() if l.startswith("|")][0]
  assert header == ("| input.source | compress.sparsity=0.5 | "
                    "compress.sparsity=0.75 |")
  # Seed 0 before seed 1; the unfinished run is left out.
  assert rows == [["input.source=city.jpg", "91.50 (93.50) / 92.00 (94.00)",
                   "88.25 (90.25)"],
                  ["input.source=noise", "80.00 (82.00)", "-"]]
  assert report.parse_pivot("a,b:c") == (["a", "b"], ["c"])
  with pytest.raises(ValueError, match="ROW_KEYS:COLUMN_KEYS"):
    report.parse_pivot("a,b")
