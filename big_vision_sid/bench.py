r"""Throughput benchmark of the fused distillation step and the patch pipeline.

  python -m big_vision_sid.bench            # full table (minutes on a CPU)
  python -m big_vision_sid.bench --quick    # a few steps per row (CI)
  python -m big_vision_sid.bench --rows=r56_r20_b128,torch_r56_r20_b128

Each row runs in its own subprocess so "peak host MiB" is that row's own peak
RSS (with --quick, rows run in-process and the column is the running peak).
Prints one Markdown table, and one JSON object per row (`BENCH {...}`)
so runs can be compared by scripts (`--json_out=FILE` writes them too).
"""

import dataclasses
import json
import resource
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags
import numpy as np


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  kind: str  # "step", "torch_step" or "patches"
  teacher: str = ""
  student: str = ""
  image_size: int = 32
  batch: int = 128
  cpu_batch: int | None = None  # reduced batch when running on CPU
  dtype: str = "float32"
  backend: str = "tf"  # patch rows


ROWS = [
    Row("r56_r20_b128", "step", "cifar_resnet56", "cifar_resnet20", 32, 128),
    Row("r20_r20_b128", "step", "cifar_resnet20", "cifar_resnet20", 32, 128),
    Row("r56_r20_b512", "step", "cifar_resnet56", "cifar_resnet20", 32, 512),
    Row("r56_r20_b128_bf16", "step", "cifar_resnet56", "cifar_resnet20", 32, 128,
        dtype="bfloat16"),
    Row("torch_r56_r20_b128", "torch_step", "cifar_resnet56", "cifar_resnet20", 32, 128),
    Row("wrn40_4_wrn16_4_b128", "step", "wrn40_4", "wrn16_4", 32, 128),
    Row("r18_r50_224_bf16", "step", "resnet18", "resnet50", 224, 256, cpu_batch=8,
        dtype="bfloat16"),
    Row("r18_r50x2_224_bf16", "step", "resnet18", "resnet50x2", 224, 256, cpu_batch=8,
        dtype="bfloat16"),
    Row("patches_32_tf", "patches", image_size=32, batch=256),
    Row("patches_224_tf", "patches", image_size=224, batch=32),
    Row("patches_32_jax", "patches", image_size=32, batch=256, backend="jax"),
    Row("patches_224_jax", "patches", image_size=224, batch=32, backend="jax"),
]
QUICK_ROWS = ("r56_r20_b128", "torch_r56_r20_b128", "patches_32_tf", "patches_32_jax")
COLUMNS = ("row", "synthetic img/s", "pipeline img/s", "compile s", "peak host MiB",
           "peak device MiB", "dtype", "batch", "devices")


def _peak_host_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _source() -> str:
  from big_vision_sid import paths  # pylint: disable=g-import-not-at-top
  city = paths.shared_dir() / "images" / "city.jpg"
  return str(city) if city.exists() else "skimage:astronaut"


def _input_config(row: Row, batch: int, backend: str):
  from input_pipeline import config as input_config  # pylint: disable=g-import-not-at-top
  cfg = input_config.default_input_config()
  cfg.source = _source()
  cfg.patch_size = row.image_size
  cfg.batch_size = batch
  cfg.num_patches = 0
  cfg.backend = backend
  cfg.train_augment = "flip_crop" if row.image_size <= 64 else "rrc_flip"
  return cfg


def _timed(fn, *, steps: int, seconds: float) -> float:
  """Calls fn() (which blocks) at least `steps` times or `seconds`; returns calls/s."""
  count, start = 0, time.perf_counter()
  while count < steps or time.perf_counter() - start < seconds:
    fn()
    count += 1
  return count / (time.perf_counter() - start)


def bench_step(row: Row, steps: int, seconds: float) -> dict[str, Any]:
  """img/s of the jitted fused step on synthetic on-device data and real patches."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from big_vision_sid import losses  # pylint: disable=g-import-not-at-top
  from big_vision_sid import models  # pylint: disable=g-import-not-at-top
  from big_vision_sid import optim  # pylint: disable=g-import-not-at-top
  from big_vision_sid import parallel  # pylint: disable=g-import-not-at-top
  from big_vision_sid import targets  # pylint: disable=g-import-not-at-top
  from big_vision_sid import teachers  # pylint: disable=g-import-not-at-top
  from big_vision_sid import train_step  # pylint: disable=g-import-not-at-top
  from input_pipeline import train_data  # pylint: disable=g-import-not-at-top

  on_cpu = jax.devices()[0].platform == "cpu"
  batch = row.cpu_batch if (on_cpu and row.cpu_batch) else row.batch
  dtype = jnp.dtype(row.dtype)
  num_classes = 10 if row.image_size == 32 else 1000
  student = models.build_model(row.student, num_classes, dtype=dtype)
  teacher = models.build_model(row.teacher, num_classes, dtype=dtype)
  optim_cfg = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-3, weight_decay=0.0, momentum=0.9, nesterov=False, b1=0.9,
      b2=0.999, schedule="constant", warmup_steps=0, end_lr_factor=0.0,
      step_boundaries=(), step_decay=0.1, grad_clip_norm=None))
  tx, _ = optim.make_optimizer(optim_cfg, 1000)
  devices = parallel.data_parallel()
  replicated, data_sharding = devices.replicated, devices.data
  shape = (row.image_size, row.image_size, 3)
  state = jax.jit(lambda r: train_step.create_train_state(r, student, tx, shape),
                  out_shardings=replicated)(jax.random.PRNGKey(0))
  teacher_vars = jax.jit(
      lambda r: teacher.init(r, jnp.zeros((1, *shape)), train=False),
      out_shardings=replicated)(jax.random.PRNGKey(1))
  target = targets.from_teacher(teachers.Teacher(
      name=row.teacher, model=teacher, variables=teacher_vars,
      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=num_classes))
  step = devices.jit_train_step(train_step.make_train_step(
      student=student, target=target, tx=tx, loss_fn=losses.get_loss("kl"),
      loss_kwargs=dict(temperature=8.0), mixing_mode="cutmix", mixing_alpha=1.0))
  synthetic = {"image": jax.device_put(
      np.random.default_rng(0).integers(0, 256, (batch, *shape), dtype=np.uint8),
      data_sharding)}

  start = time.perf_counter()
  compiled = step.lower(state, teacher_vars, synthetic).compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def run(images):
    holder["state"], metrics = compiled(holder["state"], teacher_vars, images)
    return metrics

  run(synthetic)["loss"].block_until_ready()
  synthetic_rate = _timed(lambda: run(synthetic)["loss"].block_until_ready(),
                          steps=steps, seconds=seconds) * batch

  iterator = train_data.make_train_iterator(
      _input_config(row, batch, "tf"), seed=0, start_step=0)
  put = lambda: jax.device_put(next(iterator), data_sharding)
  # Pipelined like the trainer: the next batch is fetched while a step runs.
  pending = {"images": put()}

  def pipelined():
    metrics = run(pending["images"])
    pending["images"] = put()
    metrics["loss"].block_until_ready()

  pipelined()
  pipeline_rate = _timed(pipelined, steps=steps, seconds=seconds) * batch
  device_mib = None
  stats = jax.devices()[0].memory_stats() if not on_cpu else None
  if stats and "peak_bytes_in_use" in stats:
    device_mib = stats["peak_bytes_in_use"] / 2**20
  return {"synthetic img/s": synthetic_rate, "pipeline img/s": pipeline_rate,
          "compile s": compile_s, "peak device MiB": device_mib, "batch": batch,
          "devices": f"{jax.devices()[0].platform} x{jax.device_count()}"}


def bench_torch_step(row: Row, steps: int, seconds: float) -> dict[str, Any] | None:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return None
  from big_vision_sid import bench_torch_reference  # pylint: disable=g-import-not-at-top
  rate, device = bench_torch_reference.kd_step_images_per_sec(
      batch=row.batch, steps=steps, seconds=seconds)
  return {"synthetic img/s": rate, "batch": row.batch, "devices": device}


def bench_patches(row: Row, steps: int, seconds: float) -> dict[str, Any]:
  """Patches/s (flip+crop augmented) from the pipeline alone; also per CPU-second."""
  from input_pipeline import train_data  # pylint: disable=g-import-not-at-top
  iterator = train_data.make_train_iterator(
      _input_config(row, row.batch, row.backend), seed=0, start_step=0)
  np.asarray(next(iterator)["image"])
  cpu_start, wall_start = time.process_time(), time.perf_counter()
  rate = _timed(lambda: np.asarray(next(iterator)["image"]), steps=steps, seconds=seconds) * row.batch
  cpu_seconds = time.process_time() - cpu_start
  wall = time.perf_counter() - wall_start
  import jax  # pylint: disable=g-import-not-at-top
  return {"pipeline img/s": rate, "patches/s per CPU-s": rate * wall / max(cpu_seconds, 1e-9),
          "batch": row.batch, "devices": f"{row.backend} on {jax.devices()[0].platform}"}


def run_row(row: Row, steps: int, seconds: float) -> dict[str, Any] | None:
  runner = {"step": bench_step, "torch_step": bench_torch_step,
            "patches": bench_patches}[row.kind]
  result = runner(row, steps, seconds)
  if result is None:
    return None
  result.update(row=row.name, dtype=row.dtype, **{"peak host MiB": _peak_host_mib()})
  return result


def _format(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:,.1f}"
  return str(value)


def format_table(results: list[dict[str, Any]]) -> str:
  extra = sorted({k for r in results for k in r} - set(COLUMNS))
  columns = list(COLUMNS) + extra
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for result in results:
    lines.append("| " + " | ".join(_format(result.get(c)) for c in columns) + " |")
  ratio = _torch_ratio(results)
  if ratio:
    lines.append("")
    lines.append(f"r56_r20_b128 / PyTorch eager (same machine, same run): {ratio:.2f}x")
  return "\n".join(lines)


def _torch_ratio(results: list[dict[str, Any]]) -> float | None:
  by_name = {r["row"]: r for r in results}
  ours, theirs = by_name.get("r56_r20_b128"), by_name.get("torch_r56_r20_b128")
  if ours and theirs:
    return ours["synthetic img/s"] / theirs["synthetic img/s"]
  return None


def main(argv: list[str]) -> None:
  del argv
  flag_values = flags.FLAGS
  rows_by_name = {row.name: row for row in ROWS}
  if flag_values.row:  # Child process: one row, one JSON line.
    result = run_row(rows_by_name[flag_values.row], flag_values.steps, flag_values.seconds)
    print("ROW_RESULT " + json.dumps(result), flush=True)
    return
  names = (flag_values.rows.split(",") if flag_values.rows
           else QUICK_ROWS if flag_values.quick else [r.name for r in ROWS])
  unknown = [n for n in names if n not in rows_by_name]
  if unknown:
    sys.exit(f"error: unknown rows {unknown}; known: {sorted(rows_by_name)}")
  steps = 2 if flag_values.quick else flag_values.steps
  seconds = 0.0 if flag_values.quick else flag_values.seconds
  results = []
  for name in names:
    if flag_values.quick:
      result = run_row(rows_by_name[name], steps, seconds)
      if result is None:
        print(f"(skipping {name}: torch is not installed)", flush=True)
      else:
        print("BENCH " + json.dumps(result), flush=True)
        results.append(result)
      continue
    proc = subprocess.run(
        [sys.executable, "-m", "big_vision_sid.bench", f"--row={name}",
         f"--steps={steps}", f"--seconds={seconds}"],
        capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("ROW_RESULT ")]
    if proc.returncode or not lines:
      sys.exit(f"error: row {name} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len("ROW_RESULT "):])
    if result is None:
      print(f"(skipping {name}: torch is not installed)", flush=True)
      continue
    print("BENCH " + json.dumps(result), flush=True)
    results.append(result)
  print(format_table(results))
  if flag_values.json_out:
    with open(flag_values.json_out, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in results)


if __name__ == "__main__":
  from big_vision_sid import perf  # pylint: disable=g-import-not-at-top
  perf.apply_default_xla_flags()
  flags.DEFINE_bool("quick", False, "A few steps per row, CI-sized rows.")
  flags.DEFINE_string("rows", "", "Comma-separated row names (default: all).")
  flags.DEFINE_string("row", "", "Internal: run one row in this process.")
  flags.DEFINE_integer("steps", 10, "Minimum timed steps per row.")
  flags.DEFINE_float("seconds", 10.0, "Minimum timed seconds per row.")
  flags.DEFINE_string("json_out", "", "Also write the JSON lines here.")
  app.run(main)
