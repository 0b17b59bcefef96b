r"""One-command accelerator check: speed, memory and a short real run, in ONE JSON file.

  python benchmarks/pack_device_bundle.py                    # where ../shared is
  python benchmarks/device_check.py --out=device_check.json  # on the GPU/TPU

Within about 5 minutes (`--budget_s`) it measures:

  rows       the fused distillation step of `big_vision_sid.bench` rows at
             full batch: img/s on synthetic on-device data and fed by the
             on-device patch generator, compile s, peak device MiB, and the
             generator's share of the fed step's time;
  generator  the on-device (backend 'jax') patch generator alone, 32 and 224 px;
  torch      the PyTorch eager reference row (bench_torch_reference);
  distill    ResNet-56 -> ResNet-20 from the City image with the on-device
             generator, `--distill_seconds` of training (steps from the
             measured batch-512 throughput), evaluated on the 1,017 exact
             CIFAR-10 test images.

Each part runs in its own process (its own peak device memory; one failure
does not stop the others) and the JSON is rewritten after each, so a check
cut short keeps what it measured. Nothing here needs TensorFlow, TFDS, clu or
../shared: patches come from the jax renderer, evaluation from the bundle's
npz, and absl, ml_collections and PyYAML from the bundle's python/ folder when
the machine lacks them (benchmarks/pack_device_bundle.py). `--reduced` is the
seconds-long CPU form that tests/test_device_check.py runs in one process.
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = ROOT / "workdirs" / "device_bundle"
_RESULT_PREFIX = "PHASE_RESULT "
_VERSIONS = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch",
             "absl-py", "ml-collections", "pyyaml")
# Never imported by the check; `env` reports whether anything did.
_TF_MODULES = ("tensorflow", "tensorflow_datasets", "clu")


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one check runs: bench rows, generator sizes and sizes of each part."""
  rows: tuple[str, ...]
  generator: dict[int, int]  # patch side -> batch
  row_batch: int | None  # None: each row's own (full) batch
  steps: int
  seconds: float
  torch_batch: int
  distill_batch: int | None  # None: the config's 512
  distill_eval_examples: int | None  # None: all 1,017


FULL = Plan(rows=("r56_r20_b512", "r56_r20_b128", "r18_r50_224_bf16", "r56_r20_b128_bf16"),
            generator={32: 512, 224: 256}, row_batch=None, steps=5, seconds=2.0,
            torch_batch=128, distill_batch=None, distill_eval_examples=None)
# CPU, seconds: the same code paths with tiny batches and no 224 px step.
REDUCED = Plan(rows=("r56_r20_b128",), generator={32: 8, 224: 2}, row_batch=8,
               steps=2, seconds=0.0, torch_batch=8, distill_batch=8,
               distill_eval_examples=16)
# The row whose throughput sets the distillation's step count.
_DISTILL_ROW = "r56_r20_b512"
_DISTILL_FALLBACK_STEPS = 1000
# What the distillation needs besides training: teacher, compile, evaluation.
_DISTILL_OVERHEAD_S = 45.0


def use_bundle(bundle: pathlib.Path) -> None:
  """Makes the bundle the shared folder and its packages importable.

  The bundle's packages go last on sys.path: installed ones win.
  """
  if not (bundle / "shared").is_dir():
    raise FileNotFoundError(
        f"No bundle at {bundle}: run `python benchmarks/pack_device_bundle.py` "
        "where ../shared exists and carry the folder along.")
  os.environ["SID_SHARED_DIR"] = str(bundle / "shared")
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  if str(bundle / "python") not in sys.path:
    sys.path.append(str(bundle / "python"))


def _timed_ms(fn: Callable[[], Any], steps: int, seconds: float) -> float:
  """Mean ms of fn() (which blocks) over at least `steps` calls and `seconds`."""
  count, start = 0, time.perf_counter()
  while count < steps or time.perf_counter() - start < seconds:
    fn()
    count += 1
  return 1000 * (time.perf_counter() - start) / count


# --- Parts; each returns a JSON-able dict. ---


def env_part(plan: Plan) -> dict[str, Any]:
  """Versions and devices, after importing every module the other parts use.

  A missing package then fails here, in seconds, not minutes into the check.
  """
  del plan
  # pylint: disable=g-import-not-at-top,unused-import
  import absl
  import jax
  import ml_collections
  from big_vision_sid import bench
  from big_vision_sid import parallel
  from big_vision_sid import train
  from configs import cifar10_r56_r20
  from input_pipeline import train_data
  # pylint: enable=g-import-not-at-top,unused-import
  versions = {}
  for name in _VERSIONS:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {"devices": parallel.device_description(),
          "platform": jax.devices()[0].platform, "python": sys.version.split()[0],
          "versions": versions, "absl_from": absl.__path__[0],
          "ml_collections_from": ml_collections.__path__[0]}


def _bench_row(name: str, plan: Plan):
  from big_vision_sid import bench  # pylint: disable=g-import-not-at-top
  row = {r.name: r for r in bench.ROWS}[name]
  if plan.row_batch:
    row = dataclasses.replace(row, batch=plan.row_batch, cpu_batch=None)
  return bench, row


def row_part(name: str, plan: Plan) -> dict[str, Any]:
  """A bench step row, its pipeline column fed by the on-device generator."""
  bench, row = _bench_row(name, plan)
  tf_input_config = bench._input_config  # pylint: disable=protected-access

  def jax_input_config(row_, batch, backend):
    del backend  # bench feeds its pipeline column from tf.data.
    return tf_input_config(row_, batch, "jax")

  bench._input_config = jax_input_config  # pylint: disable=protected-access
  try:
    result = bench.bench_step(row, plan.steps, plan.seconds)
  finally:
    bench._input_config = tf_input_config  # pylint: disable=protected-access
  result["row"] = name
  result["dtype"] = row.dtype
  result["image px"] = row.image_size
  result["pipeline"] = "jax generator on device"
  # Step time fed by the generator minus step time on ready data, over the former.
  result["generator share"] = 1.0 - result["pipeline img/s"] / result["synthetic img/s"]
  return result


def generator_part(size: int, plan: Plan) -> dict[str, Any]:
  """The on-device generator alone: ms per batch, the patches left on device."""
  from big_vision_sid import bench  # pylint: disable=g-import-not-at-top
  from input_pipeline import train_data  # pylint: disable=g-import-not-at-top
  batch = plan.generator[size]
  row = bench.Row(f"patches_{size}_jax", "patches", image_size=size, batch=batch,
                  backend="jax")
  config = bench._input_config(row, batch, "jax")  # pylint: disable=protected-access
  iterator = train_data.make_train_iterator(config, seed=0, start_step=0)
  next_batch = lambda: next(iterator)["image"].block_until_ready()
  next_batch()  # Compiles.
  ms = _timed_ms(next_batch, plan.steps, plan.seconds)
  return {"image px": size, "batch": batch, "ms/batch": ms,
          "patches/s": 1000 * batch / ms, "source": config.source}


def torch_part(plan: Plan) -> dict[str, Any]:
  from big_vision_sid import bench  # pylint: disable=g-import-not-at-top
  _, row = _bench_row("torch_r56_r20_b128", plan)
  row = dataclasses.replace(row, batch=plan.torch_batch)
  result = bench.bench_torch_step(row, plan.steps, plan.seconds)
  return result or {"skipped": "torch is not installed"}


def distill_part(plan: Plan, steps: int, workdir: str) -> dict[str, Any]:
  """R56 -> R20 from City, on-device generator, eval on the exact test images."""
  from big_vision_sid import train  # pylint: disable=g-import-not-at-top
  from configs import cifar10_r56_r20  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  config = cifar10_r56_r20.get_config()
  config.input.source = common.CITY
  config.input.backend = "jax"
  config.total_epochs = None
  config.total_steps = steps
  config.log_every_steps = max(1, steps // 20)
  config.eval.every_steps = 0
  config.checkpoint.every_steps = 0
  if plan.distill_batch:
    config.input.batch_size = plan.distill_batch
    config.eval.batch_size = plan.distill_batch
  if plan.distill_eval_examples:
    config.eval.max_examples = plan.distill_eval_examples
  result = train.train_and_evaluate(
      config, workdir, config_label="configs/cifar10_r56_r20.py + device_check")
  result["batch"] = config.input.batch_size
  result["source"] = config.input.source
  return result


# Part kind -> fn(argument after ':', plan, distill steps, workdir).
_PARTS: dict[str, Callable[[str, Plan, int, str], dict[str, Any]]] = {
    "env": lambda argument, plan, steps, workdir: env_part(plan),
    "row": lambda argument, plan, steps, workdir: row_part(argument, plan),
    "generator": lambda argument, plan, steps, workdir: generator_part(
        int(argument), plan),
    "torch": lambda argument, plan, steps, workdir: torch_part(plan),
    "distill": lambda argument, plan, steps, workdir: distill_part(plan, steps, workdir),
}
# Where each kind's results go in the report (one entry per argument).
_SECTIONS = {"row": "rows", "generator": "generator"}


def run_part(name: str, plan: Plan, distill_steps: int, workdir: str) -> dict[str, Any]:
  """The part `name`: env, row:NAME, generator:SIZE, torch or distill."""
  kind, _, argument = name.partition(":")
  if kind not in _PARTS:
    raise ValueError(f"Unknown part '{name}'; known: {', '.join(_PARTS)}.")
  result = _PARTS[kind](argument, plan, distill_steps, workdir)
  result["tensorflow_imported"] = any(sys.modules.get(m) for m in _TF_MODULES)
  return result


# --- The driver. ---


def _distill_steps(report: dict[str, Any], plan: Plan, seconds: float) -> int:
  """Steps that fill `seconds` at the measured generator-fed batch-512 rate."""
  if plan is REDUCED:
    return 2
  rate = report["rows"].get(_DISTILL_ROW, {}).get("pipeline img/s")
  return max(1, int(seconds * rate / 512)) if rate else _DISTILL_FALLBACK_STEPS


def _parts(plan: Plan) -> list[str]:
  # The batch-512 row first (it sizes the distillation), which trains in what
  # the budget leaves; the bf16 row (plan.rows[3:]) only if time is left.
  rows = [f"row:{r}" for r in plan.rows]
  return ["env", *rows[:3], *[f"generator:{s}" for s in plan.generator], "torch",
          "distill", *rows[3:]]


def _in_subprocess(name: str, args: argparse.Namespace, distill_steps: int,
                   workdir: str, timeout: float) -> dict[str, Any]:
  command = [sys.executable, os.path.abspath(__file__), f"--part={name}",
             f"--bundle={args.bundle}", f"--distill_steps={distill_steps}",
             f"--workdir={workdir}", *(["--reduced"] if args.reduced else [])]
  try:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          check=False)
  except subprocess.TimeoutExpired:
    return {"error": f"stopped after {timeout:.0f} s (budget)"}
  lines = [l for l in proc.stdout.splitlines() if l.startswith(_RESULT_PREFIX)]
  if proc.returncode or not lines:
    return {"error": " | ".join(proc.stderr.strip().splitlines()[-3:])[-1500:]}
  return json.loads(lines[-1][len(_RESULT_PREFIX):])


def _store(report: dict[str, Any], name: str, result: dict[str, Any]) -> None:
  kind, _, argument = name.partition(":")
  if kind in _SECTIONS:
    report[_SECTIONS[kind]][argument] = result
  else:
    report[kind] = result


def _results(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
  """Part name -> result, of every part stored so far."""
  results = {}
  for kind in _PARTS:
    if kind in _SECTIONS:
      results.update({f"{kind}:{k}": v for k, v in report[_SECTIONS[kind]].items()})
    elif kind in report:
      results[kind] = report[kind]
  return results


def _summary(report: dict[str, Any]) -> dict[str, Any]:
  """The few numbers to read first."""
  rows, torch_row = report["rows"], report.get("torch", {})
  ours = rows.get("r56_r20_b128", {}).get("synthetic img/s")
  theirs = torch_row.get("synthetic img/s")
  distill = report.get("distill", {})
  shares = {}
  for size, generator in report["generator"].items():
    fed = [r for r in rows.values() if r.get("image px") == int(size) and
           "generator share" in r]
    if fed and "ms/batch" in generator:
      shares[f"{size} px"] = {"row": fed[0]["row"], "share": fed[0]["generator share"]}
  return {
      "r56_r20_b128 / torch eager": ours / theirs if ours and theirs else None,
      "generator share of the fed step": shares,
      "distill student_top1": distill.get("student_top1"),
      "distill teacher_top1": distill.get("teacher_top1"),
      "tensorflow imported": any(
          r.get("tensorflow_imported") for r in _results(report).values()),
      "errors": sorted(name for name, r in _results(report).items() if "error" in r),
  }


def check(args: argparse.Namespace) -> dict[str, Any]:
  """Runs every part (in process with --reduced), writing args.out after each."""
  plan = REDUCED if args.reduced else FULL
  start = time.monotonic()
  report: dict[str, Any] = {
      "check": "benchmarks/device_check.py", "reduced": args.reduced,
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "budget_s": args.budget_s, "rows": {}, "generator": {}, "part_seconds": {}}
  workdir = tempfile.mkdtemp(prefix="device_check_")
  try:
    _run_parts(args, plan, report, workdir, start)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return report


def _run_parts(args: argparse.Namespace, plan: Plan, report: dict[str, Any],
               workdir: str, start: float) -> None:
  """Runs each part of `plan` that the budget allows; stores and writes it."""
  for name in _parts(plan):
    left = args.budget_s - (time.monotonic() - start)
    if left < 10:
      result = {"error": "not run: the time budget was spent"}
    else:
      aimed_seconds = min(args.distill_seconds, left - _DISTILL_OVERHEAD_S)
      distill_steps = args.distill_steps or _distill_steps(report, plan, aimed_seconds)
      part_start = time.monotonic()
      if args.reduced:
        result = run_part(name, plan, distill_steps, workdir)
      else:
        result = _in_subprocess(name, args, distill_steps, workdir, left)
      report["part_seconds"][name] = round(time.monotonic() - part_start, 1)
      if name == "distill" and plan is FULL and not args.distill_steps:
        result["aimed train seconds"] = round(aimed_seconds, 1)
    _store(report, name, result)
    report["wall_s"] = round(time.monotonic() - start, 1)
    report["summary"] = _summary(report)
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1, sort_keys=True))
    print(f"device_check: {name} done ({report['wall_s']} s)", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="device_check.json", help="The JSON file.")
  parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE),
                      help="The folder pack_device_bundle.py wrote.")
  parser.add_argument("--budget_s", type=float, default=300.0,
                      help="Parts that would start after this are not run.")
  parser.add_argument("--distill_seconds", type=float, default=180.0,
                      help="Training time the distillation's step count aims at.")
  parser.add_argument("--distill_steps", type=int, default=0,
                      help="Fixed distillation steps (0: from --distill_seconds).")
  parser.add_argument("--reduced", action="store_true",
                      help="The CPU form: tiny batches, a few steps, one process.")
  parser.add_argument("--part", default="", help=argparse.SUPPRESS)
  parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  try:
    use_bundle(pathlib.Path(args.bundle))
  except FileNotFoundError as e:
    sys.exit(f"error: {e}")
  from big_vision_sid import perf  # pylint: disable=g-import-not-at-top
  perf.apply_default_xla_flags()
  if args.part:  # A child process: one part, one line.
    plan = REDUCED if args.reduced else FULL
    result = run_part(args.part, plan, args.distill_steps, args.workdir)
    print(_RESULT_PREFIX + json.dumps(result), flush=True)
    return
  report = check(args)
  print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
  main()
