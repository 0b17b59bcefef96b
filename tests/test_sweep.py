"""Tests for the sweep runner, with a fake trainer in a subprocess."""

import io
import json
import os
import pathlib
import shlex
import subprocess
import sys
import textwrap

import pytest

from big_vision_sid import sweep

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# Stands in for big_vision_sid.train: records each call, writes the workdir
# files of the trainer contract, and fails for `distill.loss=hard`.
_FAKE_TRAINER = textwrap.dedent("""\
    import json, os, pathlib, sys

    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    workdir = pathlib.Path(args["workdir"])
    overrides = {k[len("config."):]: v for k, v in args.items()
                 if k.startswith("config.")}
    with open(os.environ["FAKE_TRAINER_CALLS"], "a") as calls:
      calls.write(json.dumps({"workdir": str(workdir),
                              "overrides": overrides}) + "\\n")
    print("training", workdir.name)
    if overrides.get("distill.loss") == "hard":
      print("boom: hard labels not supported", file=sys.stderr)
      sys.exit(3)
    (workdir / "config.json").write_text(json.dumps({"config": args["config"],
                                                     **overrides}))
    (workdir / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "student_top1": 10.0}) + "\\n")
    (workdir / "result.json").write_text(json.dumps({"student_top1": 10.0}))
    """)


@pytest.mark.parametrize("text, expected", [
    ("3", 3),
    ("-2", -2),
    ("0.5", 0.5),
    ("1e-3", 1e-3),
    (".25", 0.25),
    ("true", True),
    ("False", False),
    ("(0.1,1.0)", (0.1, 1.0)),
    ("(1,)", (1,)),
    ("()", ()),
    ("((1,2),x)", ((1, 2), "x")),
    ("kl", "kl"),
    ("$SID_SHARED_DIR/images/city.jpg", "$SID_SHARED_DIR/images/city.jpg"),
    ("skimage:astronaut", "skimage:astronaut"),
    ("resnet20.v2", "resnet20.v2"),
    ("'7'", "7"),
    ("'a,b'", "a,b"),
    ("1.2.3", "1.2.3"),
])
def test_parse_value(text, expected):
  value = sweep.parse_value(text)
  assert value == expected
  assert type(value) is type(expected)


def test_parse_axis_types_and_nested_commas():
  assert sweep.parse_axis("distill.loss=[kl,l1,hard]") == (
      "distill.loss", ["kl", "l1", "hard"])
  assert sweep.parse_axis("lr=[0.1, 1, 1e-2]") == ("lr", [0.1, 1, 0.01])
  assert sweep.parse_axis("aug.scale=[(0.1,1.0),(0.5, 1.0)]") == (
      "aug.scale", [(0.1, 1.0), (0.5, 1.0)])
  assert sweep.parse_axis("input.source=[a/b.jpg,'c,d.png']") == (
      "input.source", ["a/b.jpg", "c,d.png"])
  assert sweep.parse_axis("mixup=[true,false]") == ("mixup", [True, False])
  assert sweep.parse_axis("seed=4") == ("seed", [4])


@pytest.mark.parametrize("spec, message", [
    ("distill.loss", "key=value"),
    ("=[1,2]", "key=value"),
    ("a b=[1]", "dotted config key"),
    ("x=[]", "no values"),
    ("x=[1,1]", "repeats"),
    ("x=[(1,2]", "Unclosed"),
    ("x=[(1,2]]", "Unbalanced"),
    ("x=[1,2", "unbalanced"),
])
def test_parse_axis_rejects_malformed(spec, message):
  with pytest.raises(ValueError, match=message):
    sweep.parse_axis(spec)


def test_expand_cells_cartesian_order_and_names():
  cells = sweep.expand_cells(
      [("distill.loss", ["kl", "l1"]),
       ("input.source", ["$SID_SHARED_DIR/images/city.jpg", "skimage:x"])],
      fixed={"total_steps": 50})
  assert [c.name for c in cells] == [
      "loss=kl,source=city.jpg", "loss=kl,source=skimage_x",
      "loss=l1,source=city.jpg", "loss=l1,source=skimage_x"]
  assert cells[1].overrides == {
      "distill.loss": "kl", "input.source": "skimage:x", "total_steps": 50}
  # Stable: the same inputs give the same names.
  again = sweep.expand_cells(
      [("distill.loss", ["kl", "l1"]),
       ("input.source", ["$SID_SHARED_DIR/images/city.jpg", "skimage:x"])],
      fixed={"total_steps": 999})
  assert [c.name for c in again] == [c.name for c in cells]


def test_expand_cells_disambiguates_names():
  # Same basename from two folders, and same last key component.
  cells = sweep.expand_cells([("input.source", ["a/img.jpg", "b/img.jpg"]),
                              ("model.size", [1]), ("teacher.size", [2])])
  names = [c.name for c in cells]
  assert len(set(names)) == 2
  for name in names:
    assert name.startswith("source=img.jpg,model.size=1,teacher.size=2-")
  tuples = sweep.expand_cells([("aug.scale", [(0.1, 1.0)])])
  assert tuples[0].name == "scale=0.1-1.0"
  long_cells = sweep.expand_cells([("a", ["x" * 200, "y" * 200])])
  assert all(len(c.name) <= 96 for c in long_cells)
  assert long_cells[0].name != long_cells[1].name
  assert sweep.expand_cells([])[0].name == "default"


def test_expand_cells_rejects_conflicting_keys():
  with pytest.raises(ValueError, match="two --sweep axes"):
    sweep.expand_cells([("a", [1]), ("a", [2])])
  with pytest.raises(ValueError, match="both swept and --set"):
    sweep.expand_cells([("a", [1])], fixed={"a": 2})
  with pytest.raises(ValueError, match="identical overrides"):
    sweep.expand_cells([], config_sweep=[{"a": 1}, {"a": 1}])


def test_expand_cells_config_sweep_precedence():
  config_sweep = [{"name": "paper", "lr": 0.1, "total_steps": 1000},
                  {"lr": 0.3}]
  cells = sweep.expand_cells([("seed", [0, 1])], fixed={"total_steps": 5},
                             config_sweep=config_sweep)
  assert [c.name for c in cells] == [
      "paper,seed=0", "paper,seed=1", "lr=0.3,seed=0", "lr=0.3,seed=1"]
  # --set beats the config cell's own value.
  assert cells[0].overrides == {"lr": 0.1, "total_steps": 5, "seed": 0}
  axis_wins = sweep.expand_cells([("lr", [0.5])], config_sweep=[{"lr": 0.1}])
  assert axis_wins[0].overrides == {"lr": 0.5}


def test_load_config_sweep(tmp_path):
  config = tmp_path / "exp.py"
  config.write_text(textwrap.dedent("""\
      def get_config(arg=None):
        return {}

      def get_sweep(arg):
        return [{"name": f"{arg}-{i}", "seed": i} for i in range(2)]
      """))
  assert sweep.load_config_sweep(f"{config}:cifar") == [
      {"name": "cifar-0", "seed": 0}, {"name": "cifar-1", "seed": 1}]
  no_sweep = tmp_path / "plain.py"
  no_sweep.write_text("def get_config(arg=None):\n  return {}\n")
  with pytest.raises(ValueError, match="defines no get_sweep"):
    sweep.load_config_sweep(str(no_sweep))
  with pytest.raises(FileNotFoundError, match="missing.py"):
    sweep.load_config_sweep(str(tmp_path / "missing.py"))


def test_build_command_formats_values_for_config_flags():
  command = sweep.build_command(
      "pkg.train", "configs/x.py:arg", pathlib.Path("/w/c"),
      {"aug.scale": (0.1, 1.0), "mixup": True, "lr": 0.1, "name": "a b"},
      python="py")
  assert command == [
      "py", "-m", "pkg.train", "--config=configs/x.py:arg", "--workdir=/w/c",
      "--config.aug.scale=(0.1, 1.0)", "--config.mixup=True",
      "--config.lr=0.1", "--config.name=a b"]


def test_dry_run_prints_one_quoted_command_per_cell(tmp_path):
  cells = sweep.expand_cells([("distill.loss", ["kl", "l1", "hard"]),
                              ("input.source", ["my img.jpg", "b.png"])])
  console = io.StringIO()
  outcomes = sweep.run_sweep(cells, config="configs/x.py",
                             workdir_root=tmp_path / "root", dry_run=True,
                             python="python", console=console)
  lines = console.getvalue().splitlines()
  assert len(lines) == 6 == len(outcomes)
  first = shlex.split(lines[0])
  assert first[:4] == ["python", "-m", "big_vision_sid.train",
                       "--config=configs/x.py"]
  assert "--config.input.source=my img.jpg" in first
  assert not (tmp_path / "root").exists()  # A dry run writes nothing.


@pytest.fixture
def fake_trainer(tmp_path):
  """Writes the fake trainer module; returns (env, calls file)."""
  module_dir = tmp_path / "fake_modules"
  module_dir.mkdir()
  (module_dir / "fake_trainer.py").write_text(_FAKE_TRAINER)
  calls = tmp_path / "calls.jsonl"
  env = {**os.environ, "PYTHONPATH": str(module_dir),
         "FAKE_TRAINER_CALLS": str(calls)}
  return env, calls


def _read_calls(calls: pathlib.Path) -> list[dict]:
  if not calls.exists():
    return []
  return [json.loads(line) for line in calls.read_text().splitlines()]


def test_run_sweep_skips_finished_and_reports_failures(tmp_path, fake_trainer):
  env, calls = fake_trainer
  root = tmp_path / "root"
  cells = sweep.expand_cells([("distill.loss", ["kl", "hard", "l1"])],
                             fixed={"total_steps": 5})
  console = io.StringIO()
  outcomes = sweep.run_sweep(cells, config="configs/x.py", workdir_root=root,
                             trainer_module="fake_trainer", env=env,
                             console=console)
  assert [o.status for o in outcomes] == ["finished", "failed", "finished"]
  assert outcomes[1].returncode == 3
  assert [c["overrides"] for c in _read_calls(calls)] == [
      {"distill.loss": loss, "total_steps": "5"} for loss in ("kl", "hard", "l1")]
  # The trainer's output reaches the console and the cell's log.
  assert "training loss=kl" in console.getvalue()
  assert "boom" in (root / "loss=hard" / "stdout.log").read_text()
  description = json.loads((root / "sweep.json").read_text())
  assert [c["name"] for c in description["cells"]] == [
      "loss=kl", "loss=hard", "loss=l1"]
  assert description["cells"][0]["workdir"] == str(root / "loss=kl")

  summary = io.StringIO()
  assert not sweep.summarise(outcomes, summary)
  assert "loss=hard: exit status 3" in summary.getvalue()

  # Second call: finished cells are skipped, only the failed one re-runs.
  again = sweep.run_sweep(cells, config="configs/x.py", workdir_root=root,
                          trainer_module="fake_trainer", env=env,
                          console=io.StringIO())
  assert [o.status for o in again] == ["skipped", "failed", "skipped"]
  assert len(_read_calls(calls)) == 4
  assert _read_calls(calls)[-1]["workdir"] == str(root / "loss=hard")


def test_run_sweep_marks_exit_zero_without_result_as_failed(tmp_path):
  module_dir = tmp_path / "mods"
  module_dir.mkdir()
  (module_dir / "quiet_trainer.py").write_text("print('did nothing')\n")
  env = {**os.environ, "PYTHONPATH": str(module_dir)}
  outcomes = sweep.run_sweep(sweep.expand_cells([]), config="c.py",
                             workdir_root=tmp_path / "root",
                             trainer_module="quiet_trainer", env=env,
                             console=io.StringIO())
  assert outcomes[0].status == "failed"
  assert "no result.json" in outcomes[0].message


def test_importing_defines_no_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  assert "workdir_root" not in flags.FLAGS
  assert "sweep_from_config" not in flags.FLAGS


def test_command_line_exit_status_and_dry_run(tmp_path, fake_trainer):
  env, calls = fake_trainer
  env["PYTHONPATH"] += os.pathsep + str(_REPO_ROOT)
  config = tmp_path / "x.py"
  config.write_text("def get_config(arg=None):\n  return {}\n")
  base = [sys.executable, "-m", "big_vision_sid.sweep", f"--config={config}",
          f"--workdir_root={tmp_path / 'root'}",
          "--sweep=distill.loss=[kl,hard]", "--set=total_steps=2",
          "--trainer_module=fake_trainer"]
  dry = subprocess.run(base + ["--dry_run"], env=env, capture_output=True,
                       text=True, check=True)
  assert len(dry.stdout.splitlines()) == 2
  assert not calls.exists()

  real = subprocess.run(base, env=env, capture_output=True, text=True)
  assert real.returncode == 1, real.stderr
  assert "Failed cells:" in real.stdout
  assert "loss=hard" in real.stdout.split("Failed cells:")[1]
  assert len(_read_calls(calls)) == 2

  bad_axis = subprocess.run(base + ["--sweep=seed=[1,1]"], env=env,
                            capture_output=True, text=True)
  assert bad_axis.returncode == 1
  assert "repeats a value" in bad_axis.stderr
  assert "Traceback" not in bad_axis.stderr
