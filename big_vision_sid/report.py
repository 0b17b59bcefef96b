r"""Summarises finished and unfinished runs as a Markdown table and plots.

  python -m big_vision_sid.report --workdirs='workdirs/loss_ablation/*' \
    --out=reports/loss_ablation

Writes into `--out`:
- `report.md`: one row per run. The "setting" column lists the config keys
  that differ between the runs (paths shortened to basenames). Finished runs
  show `result.json`; unfinished ones show their latest evaluation and are
  marked `unfinished (last step N, last eval X%)`.
- `report.json`: the same rows as numbers.
- `accuracy_vs_step.png`: student top-1 vs step, one line per run.
- `bar_<key>.png` per varying key: one bar per run (student top-1), grouped
  and coloured by that key's value; ticks name the value and the run's other
  varying keys. Runs are not averaged, so seeds and unfinished runs
  (hatched) stay visible.

With `--pivot=ROW_KEYS:COLUMN_KEYS` (comma-separated dotted config keys,
e.g. `input.source,total_steps:compress.sparsity`) `report.md` also holds a
grid: one row per setting of the row keys, one column per setting of the
column keys, each cell the student top-1 and agreement of every run there
(seeds side by side, separated by "/"), finished runs only.

With `--curve_images_per_sec=R` it also writes `accuracy_vs_images.png`:
student top-1 of every evaluation against the images the student has seen
(step x batch size), a second axis in minutes at R images/s (measure R with
`python -m big_vision_sid.bench` on an idle machine), runs given by
`--curve_marks` drawn as single labelled points at their final result (e.g.
the `./run.sh` demo), and `--curve_reference=90.7:paper` as a horizontal line;
`report.md` lists the points.

  python -m big_vision_sid.report --workdirs=workdirs/curve --out=reports/curve \
    --curve_images_per_sec=250 --curve_marks=workdirs/cifar10_r56_r20_cpu_demo \
    --curve_reference='90.7:paper, ResNet-56 -> ResNet-20, 1,000 epochs'
"""

import dataclasses
import glob
import json
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Sequence

from matplotlib.figure import Figure

from big_vision_sid import cli
from big_vision_sid import workdir as workdir_lib

_MISSING = "-"
_UNSET = "<unset>"
# Marks evaluation lines of metrics.jsonl (training lines have "loss").
_EVAL_KEY = "student_top1"


@dataclasses.dataclass
class Run:
  """What one trainer workdir holds.

  Attributes:
    workdir: the run's directory.
    config: the resolved config (`config.json`), nested; {} when missing.
    train: training lines of `metrics.jsonl`, one per step, sorted by step.
    evals: evaluation lines, one per step, sorted by step.
    result: `result.json`, or None while the run is unfinished.
  """
  workdir: pathlib.Path
  config: dict[str, Any]
  train: list[dict[str, Any]]
  evals: list[dict[str, Any]]
  result: dict[str, Any] | None

  @property
  def name(self) -> str:
    return self.workdir.name

  @property
  def finished(self) -> bool:
    return self.result is not None

  @property
  def last_step(self) -> int | None:
    steps = [line["step"] for line in self.train + self.evals]
    return max(steps) if steps else None


def _read_metrics(path: pathlib.Path) -> tuple[list[dict[str, Any]],
                                               list[dict[str, Any]]]:
  """Reads metrics.jsonl into (train, eval) lines, last line per step wins."""
  if not path.exists():
    return [], []
  lines = path.read_text().splitlines()
  train, evals = {}, {}
  for number, text in enumerate(lines, start=1):
    if not text.strip():
      continue
    try:
      line = json.loads(text)
    except json.JSONDecodeError:
      if number == len(lines):
        break  # A run killed mid-write leaves a partial last line.
      raise ValueError(f"{path}:{number} is not valid JSON: {text!r}") from None
    if not isinstance(line, dict) or "step" not in line:
      raise ValueError(f"{path}:{number} has no 'step': {text!r}")
    # A resumed run logs some steps again; the later line is the current one.
    (evals if _EVAL_KEY in line else train)[line["step"]] = line
  return ([train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)])


def load_run(workdir: str | os.PathLike[str]) -> Run:
  """Reads a run's config.json, metrics.jsonl and result.json.

  Args:
    workdir: the run's directory.

  Returns:
    The run.

  Raises:
    ValueError: if `workdir` has neither config.json nor metrics.jsonl, or a
      file is malformed (the error names the file and line).
  """
  workdir = pathlib.Path(workdir)
  config_path = workdir / workdir_lib.CONFIG_FILE
  metrics_path = workdir / workdir_lib.METRICS_FILE
  if not config_path.exists() and not metrics_path.exists():
    raise ValueError(
        f"{workdir} is no run workdir: it has no {workdir_lib.CONFIG_FILE} "
        f"or {workdir_lib.METRICS_FILE}.")
  result_path = workdir / workdir_lib.RESULT_FILE
  train, evals = _read_metrics(metrics_path)
  return Run(
      workdir=workdir,
      config=workdir_lib.read_json(config_path) if config_path.exists() else {},
      train=train,
      evals=evals,
      result=(workdir_lib.read_json(result_path) if result_path.exists()
              else None))


def find_workdirs(patterns: Iterable[str]) -> list[pathlib.Path]:
  """Expands glob patterns to the run workdirs among them, sorted, unique."""
  found = set()
  for pattern in patterns:
    for match in glob.glob(os.path.expanduser(pattern)):
      path = pathlib.Path(match)
      if ((path / workdir_lib.CONFIG_FILE).exists()
          or (path / workdir_lib.METRICS_FILE).exists()):
        found.add(path)
  return sorted(found)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dicts -> {dotted key: leaf}; lists stay leaves (as tuples)."""
  flat = {}
  for key, value in config.items():
    dotted = f"{prefix}{key}"
    if isinstance(value, dict) and value:
      flat.update(flatten(value, dotted + "."))
    else:
      flat[dotted] = tuple(value) if isinstance(value, list) else value
  return flat


def varying_keys(runs: Sequence[Run]) -> list[str]:
  """Dotted config keys whose value differs between runs (or is missing in some).

  Args:
    runs: the runs to compare.

  Returns:
    The keys, sorted; empty for fewer than two runs.
  """
  if len(runs) < 2:
    return []
  # Provenance (commit, package versions) describes the code, not the setting.
  flats = [flatten({k: v for k, v in run.config.items()
                    if k != workdir_lib.PROVENANCE_KEY}) for run in runs]
  keys = set().union(*flats)
  return sorted(
      key for key in keys
      if len({json.dumps(f.get(key, _UNSET), sort_keys=True, default=str)
              for f in flats}) > 1)


def _short(value: Any) -> str:
  """A table-friendly value: paths become basenames."""
  if isinstance(value, str) and "/" in value.rstrip("/"):
    return os.path.basename(value.rstrip("/"))
  if isinstance(value, tuple):
    return "(" + ", ".join(_short(v) for v in value) + ")"
  return str(value)


def _setting(run: Run, keys: Sequence[str]) -> dict[str, str]:
  flat = flatten(run.config)
  return {key: _short(flat.get(key, _UNSET)) for key in keys}


def _format_setting(setting: dict[str, str]) -> str:
  return ", ".join(f"{k}={v}" for k, v in setting.items())


def _status(run: Run) -> str:
  if run.finished:
    return "finished"
  if run.last_step is None:
    return "unfinished (no metrics yet)"
  if not run.evals:
    return f"unfinished (last step {run.last_step}, no eval yet)"
  return (f"unfinished (last step {run.last_step}, "
          f"last eval {run.evals[-1][_EVAL_KEY]:.2f}%)")


def _row(run: Run, keys: Sequence[str]) -> dict[str, Any]:
  """One table row; unfinished runs report their latest evaluation."""
  if run.finished:
    source = run.result
    steps = run.result.get("steps")
    wall_seconds = run.result.get("wall_seconds")
    device = run.result.get("device")
  else:
    source = run.evals[-1] if run.evals else {}
    steps = run.last_step
    wall_seconds = run.train[-1].get("elapsed_s") if run.train else None
    device = None
  return {
      "run": run.name,
      "workdir": str(run.workdir),
      "setting": _setting(run, keys),
      "teacher_top1": source.get("teacher_top1"),
      "student_top1": source.get("student_top1"),
      "student_top5": source.get("student_top5"),
      "agreement": source.get("agreement"),
      "steps": steps,
      "wall_seconds": wall_seconds,
      "device": device,
      "finished": run.finished,
      "status": _status(run),
  }


def _percent(value: float | None) -> str:
  return _MISSING if value is None else f"{value:.2f}"


format_duration = workdir_lib.format_duration


def _cell(text: Any) -> str:
  return _MISSING if text is None else str(text).replace("|", "\\|")


def _markdown_table(rows: Sequence[dict[str, Any]]) -> str:
  header = ["run", "setting", "teacher top-1", "student top-1",
            "student top-5", "agreement", "steps", "wall time", "device",
            "status"]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * len(header)) + "|"]
  for row in rows:
    cells = [row["run"], _format_setting(row["setting"]) or _MISSING,
             _percent(row["teacher_top1"]), _percent(row["student_top1"]),
             _percent(row["student_top5"]), _percent(row["agreement"]),
             row["steps"], format_duration(row["wall_seconds"]), row["device"],
             row["status"]]
    lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
  return "\n".join(lines) + "\n"


def _plot_accuracy_vs_step(runs: Sequence[Run], labels: Sequence[str],
                           path: pathlib.Path) -> None:
  figure = Figure(figsize=(7, 4.5))
  axes = figure.subplots()
  for run, label in zip(runs, labels):
    if run.evals:
      axes.plot([line["step"] for line in run.evals],
                [line[_EVAL_KEY] for line in run.evals], marker="o",
                markersize=3, label=label)
  if any(run.evals for run in runs):
    axes.legend(fontsize="small")
  else:
    axes.text(0.5, 0.5, "no evaluations yet", ha="center",
              transform=axes.transAxes)
  axes.set_xlabel("step")
  axes.set_ylabel("student top-1 (%)")
  axes.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


@dataclasses.dataclass(frozen=True)
class CurveOptions:
  """The accuracy-vs-images curve.

  Attributes:
    images_per_sec: the training rate that converts images to minutes.
    marks: runs drawn as one point each, at their final result.
    reference: (top-1 %, label) drawn as a horizontal line, or None.
  """
  images_per_sec: float
  marks: Sequence[Run] = ()
  reference: tuple[float, str] | None = None


def _batch_size(run: Run) -> int:
  size = run.config.get("input", {}).get("batch_size")
  if not isinstance(size, int) or size <= 0:
    raise ValueError(f"{run.workdir}: config.json has no input.batch_size, so "
                     "its steps cannot be converted to images seen.")
  return size


def curve_points(run: Run) -> list[tuple[int, int, float]]:
  """(step, images seen, student top-1) of each evaluation, then the result."""
  points = {line["step"]: line[_EVAL_KEY] for line in run.evals}
  if run.result is not None and run.result.get(_EVAL_KEY) is not None:
    points[run.result["steps"]] = run.result[_EVAL_KEY]
  batch = _batch_size(run)
  return [(step, step * batch, points[step]) for step in sorted(points)]


def parse_reference(text: str) -> tuple[float, str]:
  """'90.7:label' -> (90.7, 'label')."""
  value, _, label = text.partition(":")
  try:
    top1 = float(value)
  except ValueError:
    raise ValueError(f"--curve_reference must be 'TOP1:label', e.g. "
                     f"'90.7:paper'; got {text!r}.") from None
  return top1, label.strip() or f"{top1:g}%"


def _plot_accuracy_vs_images(runs: Sequence[Run], labels: Sequence[str],
                             curve: CurveOptions, path: pathlib.Path) -> None:
  figure = Figure(figsize=(7.5, 4.8))
  axes = figure.subplots()
  for run, label in zip(runs, labels):
    points = curve_points(run)
    if points:
      axes.plot([p[1] for p in points], [p[2] for p in points], marker="o",
                markersize=3, label=label)
  for number, mark in enumerate(curve.marks):
    points = curve_points(mark)
    if not points:
      continue
    _, images, top1 = points[-1]
    axes.plot([images], [top1], marker="*", markersize=14, linestyle="none",
              color=f"C{(len(runs) + number) % 10}",
              label=f"{mark.name}: {top1:.2f}% after {points[-1][0]:,} steps")
  if curve.reference is not None:
    axes.axhline(curve.reference[0], color="grey", linestyle="--",
                 label=f"{curve.reference[1]}: {curve.reference[0]:g}%")
  axes.set_xlabel("images seen by the student")
  axes.set_ylabel("student top-1 (%)")
  axes.set_ylim(0, 100)
  axes.grid(alpha=0.3)
  rate = curve.images_per_sec
  top = axes.secondary_xaxis(
      "top", functions=(lambda images: images / rate / 60.0,
                        lambda minutes: minutes * 60.0 * rate))
  top.set_xlabel(f"minutes at {rate:g} images/s")
  axes.legend(fontsize="small", loc="lower right")
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def _curve_table(runs: Sequence[Run], curve: CurveOptions) -> str:
  lines = ["| run | step | images seen | minutes | student top-1 |",
           "|---|---|---|---|---|"]
  for run in [*runs, *curve.marks]:
    for step, images, top1 in curve_points(run):
      minutes = images / curve.images_per_sec / 60.0
      lines.append(f"| {_cell(run.name)} | {step} | {images:,} | "
                   f"{minutes:.1f} | {top1:.2f} |")
  return "\n".join(lines) + "\n"


def parse_pivot(text: str) -> tuple[list[str], list[str]]:
  """'a,b:c' -> (['a', 'b'], ['c'])."""
  rows, sep, columns = text.partition(":")
  row_keys = [k.strip() for k in rows.split(",") if k.strip()]
  column_keys = [k.strip() for k in columns.split(",") if k.strip()]
  if not sep or not row_keys or not column_keys:
    raise ValueError("--pivot must be 'ROW_KEYS:COLUMN_KEYS' (comma-separated "
                     f"dotted config keys); got {text!r}.")
  return row_keys, column_keys


def pivot_markdown(runs: Sequence[Run], row_keys: Sequence[str],
                   column_keys: Sequence[str]) -> str:
  """The finished runs as a grid of row settings x column settings.

  Each cell lists `top-1 (agreement)` of its runs, ordered by seed.
  """
  def setting(run, keys):
    return ", ".join(f"{k}={v}" for k, v in _setting(run, keys).items())

  finished = sorted((run for run in runs if run.finished),
                    key=lambda r: (str(flatten(r.config).get("seed")), r.name))
  row_values = sorted({setting(r, row_keys) for r in finished}, key=_value_order)
  column_values = sorted({setting(r, column_keys) for r in finished},
                         key=_value_order)
  cells: dict[tuple[str, str], list[str]] = {}
  for run in finished:
    agreement = run.result.get("agreement")
    cells.setdefault((setting(run, row_keys), setting(run, column_keys)),
                     []).append(f"{_percent(run.result.get(_EVAL_KEY))} "
                                f"({_percent(agreement)})")
  lines = ["| " + " | ".join([", ".join(row_keys), *column_values]) + " |",
           "|" + "---|" * (len(column_values) + 1)]
  for row in row_values:
    lines.append("| " + " | ".join(
        [_cell(row)] + [_cell(" / ".join(cells.get((row, column), [])) or None)
                        for column in column_values]) + " |")
  return ("Student top-1 (agreement with the target), %; runs of one cell "
          "separated by '/', ordered by seed.\n\n" + "\n".join(lines) + "\n")


def _value_order(text: str) -> tuple[int, float, str]:
  """Sorts numbers numerically, before other values."""
  try:
    return (0, float(text), "")
  except ValueError:
    return (1, 0.0, text)


def _plot_axis_bars(key: str, rows: Sequence[dict[str, Any]],
                    path: pathlib.Path) -> None:
  """One bar per run, grouped and coloured by the run's value of `key`."""
  values = sorted({row["setting"][key] for row in rows}, key=_value_order)
  ordered = sorted(rows, key=lambda r: (values.index(r["setting"][key]),
                                        r["run"]))
  colours = [f"C{values.index(r['setting'][key]) % 10}" for r in ordered]
  # Tick: the value, then the run's other varying keys, one per line (last
  # key component only, to keep the ticks narrow).
  labels = [
      "\n".join([row["setting"][key]] + [
          f"{k.rsplit('.', 1)[-1]}={v}"
          for k, v in row["setting"].items() if k != key])
      for row in ordered]
  heights = [row["student_top1"] or 0.0 for row in ordered]
  figure = Figure(figsize=(max(4.0, 1.6 * len(ordered) + 1.5), 4.5))
  axes = figure.subplots()
  bars = axes.bar(range(len(ordered)), heights, color=colours)
  for bar, row in zip(bars, ordered):
    if not row["finished"]:
      bar.set_hatch("//")
    axes.annotate(_percent(row["student_top1"]),
                  (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                  ha="center", va="bottom", fontsize="small")
  axes.set_xticks(range(len(ordered)), labels, fontsize="small")
  axes.set_xlabel(key + ("  (hatched: unfinished)"
                         if not all(r["finished"] for r in ordered) else ""))
  axes.set_ylabel("student top-1 (%)")
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def _file_safe(key: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", key)


def write_report(runs: Sequence[Run], out_dir: str | os.PathLike[str],
                 curve: CurveOptions | None = None,
                 pivot: tuple[Sequence[str], Sequence[str]] | None = None
                 ) -> pathlib.Path:
  """Writes report.md, report.json and the PNG plots into `out_dir`.

  Args:
    runs: the runs, in table order.
    out_dir: created if missing.
    curve: also plot accuracy against images seen (and minutes).
    pivot: (row keys, column keys) of an extra grid (see `pivot_markdown`).

  Returns:
    The path of report.md.

  Raises:
    ValueError: if `runs` is empty.
  """
  if not runs:
    raise ValueError("No runs to report on.")
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  keys = varying_keys(runs)
  rows = [_row(run, keys) for run in runs]

  plots = ["accuracy_vs_step.png"]
  labels = [_format_setting(row["setting"]) or row["run"] for row in rows]
  _plot_accuracy_vs_step(runs, labels, out_dir / plots[0])
  for key in keys:
    plots.append(f"bar_{_file_safe(key)}.png")
    _plot_axis_bars(key, rows, out_dir / plots[-1])
  curve_section = []
  if curve is not None:
    plots.append("accuracy_vs_images.png")
    _plot_accuracy_vs_images(runs, labels, curve, out_dir / plots[-1])
    curve_section = ["## Accuracy vs images seen\n", _curve_table(runs, curve)]

  finished = sum(row["finished"] for row in rows)
  markdown = [
      "# Single-image distillation runs\n",
      f"{len(rows)} runs, {finished} finished. Accuracies in %; unfinished "
      "runs show their latest evaluation.\n",
      f"Varying config keys: {', '.join(keys) if keys else 'none'}.\n",
      _markdown_table(rows),
      *(["## Grid\n", pivot_markdown(runs, *pivot)] if pivot else []),
      *curve_section,
      *(f"![{name}]({name})\n" for name in plots),
  ]
  report_path = out_dir / "report.md"
  workdir_lib.write_text(report_path, "\n".join(markdown))
  workdir_lib.write_text(
      out_dir / "report.json",
      json.dumps({"varying_keys": keys, "rows": rows}, indent=2) + "\n")
  return report_path


def _define_flags() -> Callable[[Sequence[str]], None]:
  """Defines the command-line flags; returns `main`."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_multi_string("workdirs", None, "Glob of run workdirs; "
                            "repeatable.", required=True)
  flags.DEFINE_string("out", None, "Directory for the report.", required=True)
  flags.DEFINE_string("pivot", None, "'ROW_KEYS:COLUMN_KEYS': also a grid of "
                      "the runs by these config keys.")
  flags.DEFINE_float("curve_images_per_sec", None, "If set, also plot student "
                     "top-1 vs images seen, with minutes at this rate.")
  flags.DEFINE_multi_string("curve_marks", [], "Glob of workdirs drawn as one "
                            "point each on the curve; repeatable.")
  flags.DEFINE_string("curve_reference", None, "'TOP1:label' drawn as a "
                      "horizontal line on the curve.")
  values = flags.FLAGS

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    workdirs = find_workdirs(values.workdirs)
    if not workdirs:
      raise app.UsageError(
          f"No run workdirs (with {workdir_lib.CONFIG_FILE} or "
          f"{workdir_lib.METRICS_FILE}) match "
          f"{values.workdirs}.")
    try:
      curve = None
      if values.curve_images_per_sec is not None:
        if values.curve_images_per_sec <= 0:
          raise ValueError("--curve_images_per_sec must be > 0.")
        curve = CurveOptions(
            images_per_sec=values.curve_images_per_sec,
            marks=[load_run(w) for w in find_workdirs(values.curve_marks)],
            reference=(parse_reference(values.curve_reference)
                       if values.curve_reference else None))
      pivot = parse_pivot(values.pivot) if values.pivot else None
      report = write_report([load_run(w) for w in workdirs], values.out, curve,
                            pivot)
    except cli.USER_ERRORS as e:
      cli.exit_with_user_error(e)
    print(f"Wrote {report} ({len(workdirs)} runs).")

  return main


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(_define_flags())
