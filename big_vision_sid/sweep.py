r"""Runs a grid of trainer runs, one workdir per cell, skipping finished ones.

Example (three losses on two source images, 50 steps each):

  python -m big_vision_sid.sweep --config=configs/cifar10_r56_r20.py:cpu_demo \
    --workdir_root=workdirs/loss_ablation \
    --sweep='distill.loss=[kl,l1,hard]' \
    --sweep='input.source=[$SID_SHARED_DIR/images/city.jpg,skimage:astronaut]' \
    --set=total_steps=50

Cells come from the cartesian product of the `--sweep` axes and, with
`--sweep_from_config`, from the config module's `get_sweep(arg)` (a list of
override dicts, each optionally naming its cell with the key `name`). When both
are given, every config cell is combined with every axis cell.

Override precedence (later wins): config `get_sweep` cell < `--sweep` axes <
`--set`. The command line thus beats the config file, e.g. `--set=total_steps=5`
shortens every config cell for a smoke test. A key given twice on the command
line (in two axes, or in an axis and in `--set`) is an error, since one of the
two would silently be ignored.

Each cell runs in `<workdir_root>/<cell name>` as a subprocess
`python -m <trainer_module> --config=... --workdir=... --config.key=value ...`,
one after another. Cells whose workdir holds `result.json` are skipped; others
are (re-)run, and the trainer resumes from its checkpoints. A failing cell does
not stop the sweep; the exit status is non-zero when any cell failed.
`--dry_run` prints one shell command per cell (e.g. for a cluster scheduler)
and writes nothing.
"""

import dataclasses
import hashlib
import importlib.util
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

from big_vision_sid import workdir as workdir_lib

# Written into --workdir_root (not a run workdir): the cells and their workdirs.
SWEEP_FILE = "sweep.json"

# Cell names longer than this are cut and made unique with a hash suffix.
_MAX_NAME_LENGTH = 96
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._=,+-]+")
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_OPENING = {"(": ")", "[": "]", "{": "}"}


@dataclasses.dataclass(frozen=True)
class Cell:
  """One point of the sweep.

  Attributes:
    name: directory-safe, unique name of the cell's workdir.
    overrides: dotted config key -> value, in the order they are passed.
  """
  name: str
  overrides: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class CellOutcome:
  """What happened to one cell in `run_sweep`.

  Attributes:
    cell: the cell.
    workdir: the cell's workdir.
    status: "skipped" (result.json existed), "finished", "failed" or
      "dry_run".
    returncode: the trainer's exit status; None when it was not run.
    message: why the cell failed, empty otherwise.
  """
  cell: Cell
  workdir: pathlib.Path
  status: str
  returncode: int | None = None
  message: str = ""


def _split_top_level(text: str) -> list[str]:
  """Splits on commas that are outside brackets, parentheses and quotes."""
  parts, depth_stack, quote, current = [], [], None, []
  for char in text:
    if quote:
      if char == quote:
        quote = None
    elif char in "'\"":
      quote = char
    elif char in _OPENING:
      depth_stack.append(_OPENING[char])
    elif char in ")]}":
      if not depth_stack or depth_stack.pop() != char:
        raise ValueError(f"Unbalanced '{char}' in {text!r}.")
    elif char == "," and not depth_stack:
      parts.append("".join(current))
      current = []
      continue
    current.append(char)
  if quote or depth_stack:
    raise ValueError(f"Unclosed quote or bracket in {text!r}.")
  parts.append("".join(current))
  return parts


def parse_value(text: str) -> Any:
  """Parses one sweep value: int, float, bool, tuple `(a,b)` or string.

  Quotes force a string (`'1'` is the string "1", `'a,b'` keeps its comma).
  Everything that is not a number, `true`/`false` (any case) or a tuple is a
  string, so paths like `$SID_SHARED_DIR/images/city.jpg` need no quotes.

  Args:
    text: the value as written on the command line.

  Returns:
    The parsed value.
  """
  text = text.strip()
  if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
    return text[1:-1]
  if text.startswith("(") and text.endswith(")"):
    inner = text[1:-1].strip()
    if not inner:
      return ()
    items = _split_top_level(inner)
    if items[-1].strip() == "":  # A trailing comma, as in `(1,)`.
      items = items[:-1]
    return tuple(parse_value(item) for item in items)
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  if _INT_RE.fullmatch(text):
    return int(text)
  if _FLOAT_RE.fullmatch(text):
    return float(text)
  return text


def _split_key_value(spec: str, flag: str) -> tuple[str, str]:
  key, sep, value = spec.partition("=")
  key = key.strip()
  if not sep or not key:
    raise ValueError(f"{flag} {spec!r} must look like 'key=value'.")
  if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
    raise ValueError(f"{flag} {spec!r}: {key!r} is not a dotted config key.")
  return key, value.strip()


def parse_axis(spec: str) -> tuple[str, list[Any]]:
  """Parses a `--sweep` axis `key=[v1,v2,...]` (or `key=v` for one value).

  Args:
    spec: the axis, e.g. `distill.loss=[kl,l1]` or `aug.scale=[(0.1,1.0),(0.5,1.0)]`.

  Returns:
    The dotted config key and the list of parsed values.

  Raises:
    ValueError: on a malformed spec, an empty list or repeated values.
  """
  key, text = _split_key_value(spec, "--sweep")
  if text.startswith("[") != text.endswith("]"):
    raise ValueError(f"--sweep {spec!r}: unbalanced '[...]' around the values.")
  if text.startswith("["):
    items = [item for item in _split_top_level(text[1:-1]) if item.strip()]
    values = [parse_value(item) for item in items]
  else:
    values = [parse_value(text)]
  if not values:
    raise ValueError(f"--sweep {spec!r} has no values.")
  if len({format_value(v) for v in values}) != len(values):
    raise ValueError(f"--sweep {spec!r} repeats a value.")
  return key, values


def parse_set(spec: str) -> tuple[str, Any]:
  """Parses a fixed `--set` override `key=value`."""
  key, text = _split_key_value(spec, "--set")
  return key, parse_value(text)


def format_value(value: Any) -> str:
  """Formats a value the way ml_collections' config flags parse it back."""
  if isinstance(value, tuple):
    return repr(value)
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _short_value(value: Any) -> str:
  """A value for a cell name: paths become basenames, tuples join with '-'."""
  if isinstance(value, tuple):
    return "-".join(_short_value(v) for v in value)
  if isinstance(value, str) and "/" in value.rstrip("/"):
    return os.path.basename(value.rstrip("/"))
  return format_value(value)


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
  """Maps each key to its last component, unless that would be ambiguous."""
  last = [key.rsplit(".", 1)[-1] for key in keys]
  return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _digest(overrides: Mapping[str, Any]) -> str:
  canonical = json.dumps(
      {k: format_value(v) for k, v in overrides.items()}, sort_keys=True)
  return hashlib.sha1(canonical.encode()).hexdigest()[:8]


def _sanitise(name: str) -> str:
  return _UNSAFE_NAME_CHARS.sub("_", name).strip("._") or "cell"


def _readable_name(overrides: Mapping[str, Any], all_keys: Sequence[str],
                   prefix: str | None) -> str:
  short = _short_keys(all_keys)
  parts = [prefix] if prefix else []
  parts += [f"{short[k]}={_short_value(v)}" for k, v in overrides.items()]
  return _sanitise(",".join(parts)) if parts else "default"


def expand_cells(
    axes: Sequence[tuple[str, Sequence[Any]]],
    fixed: Mapping[str, Any] | None = None,
    config_sweep: Sequence[Mapping[str, Any]] | None = None,
) -> list[Cell]:
  """Expands sweep axes (and config cells) into named cells.

  Names only mention what varies (config cell name, axis values), never the
  fixed overrides. They are directory-safe, at most ~100 characters, and
  stable: the same inputs always give the same names. Names that would collide
  (e.g. two paths with the same basename) or be too long get a hash suffix of
  the cell's overrides.

  Args:
    axes: (dotted key, values) pairs, e.g. from `parse_axis`; the first axis
      varies slowest.
    fixed: overrides applied to every cell (`--set`); they win over both.
    config_sweep: cells from the config's `get_sweep`; each a dict of
      overrides with an optional `name`. Axis and fixed overrides win.

  Returns:
    The cells, config cells outermost, then the axes in order.

  Raises:
    ValueError: if a key appears in two axes or in an axis and `fixed`.
  """
  fixed = dict(fixed or {})
  axis_keys = [key for key, _ in axes]
  for key in axis_keys:
    if axis_keys.count(key) > 1:
      raise ValueError(f"Config key {key!r} is swept by two --sweep axes.")
    if key in fixed:
      raise ValueError(f"Config key {key!r} is both swept and --set.")

  base_cells: list[tuple[str | None, dict[str, Any]]] = [(None, {})]
  if config_sweep:
    base_cells = []
    for i, entry in enumerate(config_sweep):
      entry = dict(entry)
      name = entry.pop("name", None)
      if not entry and name is None:
        raise ValueError(f"get_sweep() entry {i} is empty.")
      base_cells.append((None if name is None else str(name), entry))

  axis_combos: list[dict[str, Any]] = [{}]
  for key, values in axes:
    axis_combos = [{**combo, key: v} for combo in axis_combos for v in values]

  all_keys = list(dict.fromkeys(
      [k for _, entry in base_cells for k in entry] + axis_keys))
  drafts = []
  for base_name, base_overrides in base_cells:
    for combo in axis_combos:
      overrides = {**base_overrides, **combo, **fixed}
      # Named config cells keep their name; unnamed ones spell out their keys.
      shown = combo if base_name is not None else {**base_overrides, **combo}
      name = _readable_name(shown, all_keys, base_name)
      # The suffix ignores `fixed`, so changing --set keeps the workdirs.
      suffix = _digest({"name": base_name, **base_overrides, **combo})
      drafts.append((name, suffix, overrides))

  names = [name for name, _, _ in drafts]
  cells, seen = [], set()
  for name, suffix, overrides in drafts:
    if names.count(name) > 1 or len(name) > _MAX_NAME_LENGTH:
      name = f"{name[:_MAX_NAME_LENGTH - len(suffix) - 1]}-{suffix}"
    if name in seen:
      raise ValueError(f"Two sweep cells have identical overrides: {name!r}.")
    seen.add(name)
    cells.append(Cell(name=name, overrides=overrides))
  return cells


def load_config_sweep(config: str) -> list[dict[str, Any]]:
  """Calls `get_sweep(arg)` of a config file given as `path.py[:arg]`.

  Args:
    config: the `--config` value.

  Returns:
    The config's list of cell override dicts.

  Raises:
    FileNotFoundError: if the config file does not exist.
    ValueError: if it defines no `get_sweep` or that returns no list of dicts.
  """
  path, _, arg = config.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Config file {path!r} does not exist.")
  spec = importlib.util.spec_from_file_location("_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(
        f"Config {path!r} defines no get_sweep(arg), needed by "
        "--sweep_from_config.")
  cells = module.get_sweep(arg or None)
  if not isinstance(cells, (list, tuple)) or not all(
      isinstance(c, Mapping) for c in cells):
    raise ValueError(f"get_sweep() of {path!r} must return a list of dicts.")
  return [dict(c) for c in cells]


def build_command(
    trainer_module: str,
    config: str,
    workdir: str | os.PathLike[str],
    overrides: Mapping[str, Any],
    python: str = sys.executable,
) -> list[str]:
  """The trainer command line (argv) for one cell."""
  return [
      python, "-m", trainer_module, f"--config={config}",
      f"--workdir={os.fspath(workdir)}",
      *(f"--config.{key}={format_value(v)}" for key, v in overrides.items()),
  ]


def write_sweep_file(cells: Sequence[Cell], config: str,
                     workdir_root: pathlib.Path) -> pathlib.Path:
  """Writes `<workdir_root>/sweep.json` describing the cells."""
  workdir_root.mkdir(parents=True, exist_ok=True)
  description = {
      "config": config,
      "cells": [{
          "name": cell.name,
          "overrides": {k: format_value(v) for k, v in cell.overrides.items()},
          "workdir": str(workdir_root / cell.name),
      } for cell in cells],
  }
  path = workdir_root / SWEEP_FILE
  workdir_lib.write_text(path, json.dumps(description, indent=2) + "\n")
  return path


def _run_streaming(command: Sequence[str], log_path: pathlib.Path,
                   env: Mapping[str, str], console: TextIO) -> int:
  """Runs `command`, copying its stdout+stderr to `console` and `log_path`."""
  with open(log_path, "a", encoding="utf-8") as log:
    log.write(f"$ {shlex.join(command)}\n")
    log.flush()
    with subprocess.Popen(command, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=dict(env)) as process:
      for raw_line in process.stdout:
        line = raw_line.decode("utf-8", errors="replace")
        console.write(line)
        console.flush()
        log.write(line)
    return process.returncode


def run_sweep(
    cells: Sequence[Cell],
    *,
    config: str,
    workdir_root: str | os.PathLike[str],
    trainer_module: str = "big_vision_sid.train",
    dry_run: bool = False,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    console: TextIO | None = None,
) -> list[CellOutcome]:
  """Runs every unfinished cell sequentially (or prints them with `dry_run`).

  Args:
    cells: from `expand_cells`.
    config: the trainer's `--config` value (`path.py[:arg]`).
    workdir_root: parent of the cells' workdirs.
    trainer_module: module run with `python -m`.
    dry_run: only print one shell-quoted command per cell; write nothing.
    python: interpreter for the trainer.
    env: the trainer's environment (default: this process's).
    console: where progress and the trainers' output go (default stdout).

  Returns:
    One outcome per cell, in order.
  """
  console = console or sys.stdout
  root = pathlib.Path(workdir_root)
  if dry_run:
    outcomes = []
    for cell in cells:
      command = build_command(trainer_module, config, root / cell.name,
                              cell.overrides, python)
      console.write(shlex.join(command) + "\n")
      outcomes.append(CellOutcome(cell, root / cell.name, "dry_run"))
    return outcomes

  write_sweep_file(cells, config, root)
  # Unbuffered, so the trainer's progress shows up as it happens.
  child_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
  outcomes = []
  for index, cell in enumerate(cells, start=1):
    workdir = root / cell.name
    header = f"[sweep {index}/{len(cells)}] {cell.name}"
    if (workdir / workdir_lib.RESULT_FILE).exists():
      console.write(f"{header}: skipped, {workdir_lib.RESULT_FILE} exists.\n")
      outcomes.append(CellOutcome(cell, workdir, "skipped"))
      continue
    console.write(f"{header}: running in {workdir}\n")
    console.flush()
    workdir.mkdir(parents=True, exist_ok=True)
    command = build_command(trainer_module, config, workdir, cell.overrides,
                            python)
    returncode = _run_streaming(command, workdir / workdir_lib.STDOUT_LOG_FILE,
                                child_env, console)
    if returncode != 0:
      outcome = CellOutcome(cell, workdir, "failed", returncode,
                            f"exit status {returncode}")
    elif not (workdir / workdir_lib.RESULT_FILE).exists():
      outcome = CellOutcome(cell, workdir, "failed", returncode,
                            f"exited 0 but wrote no {workdir_lib.RESULT_FILE}")
    else:
      outcome = CellOutcome(cell, workdir, "finished", returncode)
    console.write(f"{header}: {outcome.status}"
                  f"{' (' + outcome.message + ')' if outcome.message else ''}\n")
    outcomes.append(outcome)
  return outcomes


def summarise(outcomes: Iterable[CellOutcome], console: TextIO) -> bool:
  """Prints a one-line-per-failure summary; returns whether all succeeded."""
  outcomes = list(outcomes)
  failed = [o for o in outcomes if o.status == "failed"]
  counts = {}
  for outcome in outcomes:
    counts[outcome.status] = counts.get(outcome.status, 0) + 1
  console.write("Sweep done: " + ", ".join(
      f"{n} {status}" for status, n in sorted(counts.items())) + ".\n")
  if failed:
    console.write("Failed cells:\n")
    for outcome in failed:
      console.write(f"  {outcome.cell.name}: {outcome.message} "
                    f"(log: {outcome.workdir / workdir_lib.STDOUT_LOG_FILE})\n")
  return not failed


def _define_flags() -> Callable[[Sequence[str]], int]:
  """Defines the command-line flags; returns `main`."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("config", None, "Trainer config, `path.py[:arg]`.",
                      required=True)
  flags.DEFINE_string("workdir_root", None, "Parent of the cell workdirs.",
                      required=True)
  flags.DEFINE_multi_string("sweep", [], "Axis `key=[v1,v2,...]`; repeatable.")
  flags.DEFINE_multi_string("set", [], "Fixed override `key=value` for every "
                            "cell; repeatable.")
  flags.DEFINE_bool("sweep_from_config", False,
                    "Also take cells from the config's get_sweep(arg).")
  flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")
  flags.DEFINE_string("trainer_module", "big_vision_sid.train",
                      "Module run with `python -m` for each cell.")
  flags.DEFINE_string("python", sys.executable, "Interpreter for the trainer.")
  values = flags.FLAGS

  def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
      raise SystemExit(f"Unexpected arguments: {' '.join(argv[1:])}")
    config_path = values.config.partition(":")[0]
    if not os.path.isfile(config_path):
      raise app.UsageError(f"Config file {config_path!r} does not exist.")
    try:
      axes = [parse_axis(spec) for spec in values.sweep]
      fixed = dict(parse_set(spec) for spec in values.set)
      config_sweep = (load_config_sweep(values.config)
                      if values.sweep_from_config else None)
      cells = expand_cells(axes, fixed, config_sweep)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    outcomes = run_sweep(
        cells, config=values.config, workdir_root=values.workdir_root,
        trainer_module=values.trainer_module, dry_run=values.dry_run,
        python=values.python)
    if values.dry_run:
      return 0
    return 0 if summarise(outcomes, sys.stdout) else 1

  return main


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(_define_flags())
