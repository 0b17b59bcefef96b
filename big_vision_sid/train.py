r"""Single-image distillation trainer.

  python -m big_vision_sid.train --config=configs/cifar10_r56_r20.py \
      --workdir=workdirs/r56_r20 --config.total_steps=2000

Re-running the same command on the same workdir resumes from the latest
checkpoint. Every run ends with one machine-readable line `RESULT {json}`.
"""

import collections
import json
import logging as std_logging
import os
import sys
import time
from typing import Any, Iterator

# Before TensorFlow/JAX are imported by the modules below.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from big_vision_sid import checkpointing
from big_vision_sid import evaluators
from big_vision_sid import losses
from big_vision_sid import metric_writers
from big_vision_sid import models
from big_vision_sid import optim
from big_vision_sid import perf
from big_vision_sid import teachers
from big_vision_sid import train_step as train_step_lib
from input_pipeline import eval_data
from input_pipeline import train_data


# `teacher.format` of supervised training: the targets are the dataset's labels.
SUPERVISED_FORMAT = "none"


class NonFiniteLossError(RuntimeError):
  """The loss or the parameters became NaN/inf; nothing non-finite is saved."""


# Errors caused by the user's input (config, files): reported as one clear line.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NonFiniteLossError)


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _write_json_atomic(path: str, payload: dict[str, Any]) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _prefetch_to_device(
    batches: Iterator[Any], sharding: jax.sharding.Sharding, size: int
) -> Iterator[Any]:
  """Keeps `size` host batches (pytrees of arrays) in flight to the devices."""
  queue: collections.deque[Any] = collections.deque()

  def put_array(x):
    if isinstance(x, jax.Array):  # From the on-device generator (single host).
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))

  def put(batch):
    return jax.tree.map(put_array, batch)

  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


class _Throttle:
  """Bounds the steps dispatched ahead of the device.

  Waiting on step k-2's output keeps one step queued behind the running one,
  so the device never idles, while the host cannot run arbitrarily far ahead
  (which would delay error detection and pin buffers).
  """

  def __init__(self, max_in_flight: int):
    self._pending: collections.deque[jax.Array] = collections.deque()
    self._max = max_in_flight

  def add(self, token: jax.Array) -> None:
    self._pending.append(token)
    while len(self._pending) > self._max:
      self._pending.popleft().block_until_ready()


def _device_description() -> str:
  devices = jax.devices()
  kind = devices[0].device_kind if devices[0].platform != "cpu" else "cpu"
  return f"{kind} x{len(devices)}"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       config_label: str = "") -> dict[str, Any]:
  """Distils `config.teacher` into a fresh `config.student`; returns the result.

  Args:
    config: the experiment config (see configs/common.py).
    workdir: checkpoints, metrics and result.json go here; resumes from it.
    config_label: the config file (and argument) recorded with the result.
  """
  wall_start = time.time()
  perf.enable_compilation_cache()
  os.makedirs(workdir, exist_ok=True)
  is_main_process = jax.process_index() == 0
  if is_main_process:
    _write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())

  # Everything that can fail because of the user's input is checked before
  # the first step, so a bad run never writes a checkpoint.
  compute_dtype = jnp.dtype(config.compute_dtype)
  supervised = config.teacher.format == SUPERVISED_FORMAT
  if supervised:
    # No teacher: train one on labelled data (configs/cifar10_supervised_teacher.py).
    teacher, teacher_model = None, None
    teacher_name, mean, std = "labels", config.teacher.mean, config.teacher.std
    if config.mixing.mode != "none":
      raise ValueError("Supervised training (teacher.format='none') needs mixing.mode='none'.")
  else:
    teacher = teachers.load_teacher(config.teacher)
    teacher_model = models.build_model(
        teacher.name, teacher.num_classes, dtype=compute_dtype)
    teacher_name, mean, std = teacher.name, teacher.mean, teacher.std
    if config.student.num_classes != teacher.num_classes:
      raise ValueError(
          f"student.num_classes={config.student.num_classes} but the teacher "
          f"{teacher.name} predicts {teacher.num_classes} classes.")
  student = models.build_model(
      config.student.name, config.student.num_classes, dtype=compute_dtype)
  loss_fn = losses.get_loss(config.distill.loss)
  evaluate = evaluators.EVALUATORS.get(config.eval.name)
  eval_set = eval_data.load_eval_set(
      config.eval.dataset, image_size=config.eval.image_size,
      max_examples=config.eval.get("max_examples") or None)
  steps_per_epoch = None
  patches_per_epoch = train_data.patches_per_epoch(config.input)
  if patches_per_epoch:
    steps_per_epoch = patches_per_epoch // config.input.batch_size
  total_steps = optim.resolve_total_steps(
      config.get("total_steps"), config.get("total_epochs"), steps_per_epoch)
  tx, schedule = optim.make_optimizer(config.optim, total_steps)

  num_devices = jax.device_count()
  batch_size = config.input.batch_size
  if batch_size % num_devices:
    raise ValueError(
        f"input.batch_size={batch_size} is not divisible by the {num_devices} "
        "devices; choose a multiple.")
  if config.eval.batch_size % num_devices:
    raise ValueError(
        f"eval.batch_size={config.eval.batch_size} is not divisible by the "
        f"{num_devices} devices.")
  # Auto axes: XLA propagates shardings (e.g. through CutMix's batch roll).
  mesh = jax.make_mesh((num_devices,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated = jax.NamedSharding(mesh, jax.sharding.PartitionSpec())
  data_sharding = jax.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

  image_size = config.input.patch_size
  state = jax.jit(
      lambda rng: train_step_lib.create_train_state(
          rng, student, tx, (image_size, image_size, 3)),
      out_shardings=replicated)(jax.random.PRNGKey(config.seed))
  teacher_variables = jax.device_put(teacher.variables if teacher else {}, replicated)

  step_fn = train_step_lib.make_train_step(
      student=student, teacher=teacher_model, tx=tx, loss_fn=loss_fn,
      loss_kwargs=dict(temperature=config.distill.temperature,
                       tau_squared=config.distill.tau_squared,
                       topk=config.distill.topk),
      mixing_mode=config.mixing.mode, mixing_alpha=config.mixing.alpha,
      mean=mean, std=std, schedule=schedule)
  jit_step = jax.jit(
      step_fn,
      in_shardings=(replicated, replicated, data_sharding),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,))
  predict = jax.jit(
      train_step_lib.make_predict_fn(
          student=student, teacher=teacher_model, mean=mean, std=std),
      in_shardings=(replicated, replicated, data_sharding),
      out_shardings=(data_sharding, data_sharding if teacher else None))
  check_finite = jax.jit(train_step_lib.all_finite)

  writer = metric_writers.create_writer(workdir, enabled=is_main_process)
  checkpointer = checkpointing.Checkpointer(
      workdir, keep=config.checkpoint.keep,
      async_save=config.checkpoint.async_save)
  try:
    start_step = 0
    latest = checkpointer.latest_step()
    if latest is not None:
      state, meta = checkpointer.restore(latest, checkpointing.abstract_like(state))
      start_step = int(meta["step"])
      logging.info("Resumed from checkpoint at step %d (%s).", start_step,
                   checkpointer.directory)
      print(f"Resumed from checkpoint at step {start_step}", flush=True)
    else:
      logging.info("No checkpoint in %s: starting at step 0.", checkpointer.directory)

    def predict_global_batch(images: np.ndarray):
      # Every host reads the whole eval batch and contributes its own rows.
      rows = images.shape[0] // jax.process_count()
      local = images[jax.process_index() * rows:(jax.process_index() + 1) * rows]
      global_images = jax.make_array_from_process_local_data(data_sharding, local)
      return predict(state, teacher_variables, global_images)

    def run_eval(step: int) -> dict[str, float]:
      eval_start = time.time()
      result = evaluate(predict_global_batch, eval_set, config.eval.batch_size)
      writer.write_scalars(step, result)
      logging.info(
          "eval @%d (%.1fs): student top-1 %.2f%% top-5 %.2f%%, teacher top-1 "
          "%.2f%%, agreement %.2f%% on %d examples", step, time.time() - eval_start,
          result["student_top1"], result["student_top5"],
          result.get("teacher_top1", float("nan")), result.get("agreement", float("nan")),
          result["eval_examples"])
      return result

    def save(step: int, pending_losses: list[jax.Array]) -> None:
      losses_ok = all(np.isfinite(np.asarray(jax.device_get(pending_losses))))
      if not (losses_ok and bool(check_finite(state.params))):
        raise NonFiniteLossError(
            f"Loss or parameters became non-finite before step {step}; not saving. "
            f"The last checkpoint ({checkpointer.latest_step()}) is intact. Lower "
            "optim.lr, enable optim.grad_clip_norm, or check the teacher and input.")
      checkpointer.save(step, state, {"step": step, "config": config_label})

    make_iterator = (train_data.make_labeled_train_iterator if supervised
                     else train_data.make_train_iterator)
    batches = make_iterator(
        config.input, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count())
    if supervised:
      batches = ({"image": images, "label": labels} for images, labels in batches)
    device_batches = _prefetch_to_device(batches, data_sharding, size=2)

    throttle = _Throttle(max_in_flight=2)
    window_metrics: list[dict[str, jax.Array]] = []
    unchecked_losses: list[jax.Array] = []
    last_save_time = time.time()
    train_start = window_start = time.time()
    timed_steps, timed_seconds = 0, 0.0
    step = start_step
    logging.info("Training %s -> %s for %d steps (batch %d on %s).", teacher_name,
                 config.student.name, total_steps, batch_size, _device_description())
    while step < total_steps:
      images = next(device_batches)
      state, metrics = jit_step(state, teacher_variables, images)
      step += 1
      throttle.add(metrics["loss"])
      window_metrics.append(metrics)
      unchecked_losses.append(metrics["loss"])

      if step % config.log_every_steps == 0 or step == total_steps:
        fetched = jax.device_get(window_metrics)
        mean_metrics = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        if not np.isfinite(mean_metrics["loss"]):
          raise NonFiniteLossError(
              f"Non-finite loss ({mean_metrics['loss']}) at step {step}. The last "
              f"checkpoint ({checkpointer.latest_step()}) is intact. Lower optim.lr, "
              "enable optim.grad_clip_norm, or check the teacher and input.")
        now = time.time()
        elapsed_window = now - window_start
        steps_window = len(window_metrics)
        # The first window includes compilation; it is excluded from img/s.
        if step - steps_window > start_step:
          timed_steps += steps_window
          timed_seconds += elapsed_window
        steps_per_sec = steps_window / max(elapsed_window, 1e-9)
        mean_metrics["img_per_sec"] = steps_per_sec * batch_size
        mean_metrics["elapsed_s"] = now - train_start
        writer.write_scalars(step, mean_metrics)
        eta = (total_steps - step) / steps_per_sec
        logging.info(
            "step %d/%d loss %.4f lr %.3g agree %.1f%% %.1f img/s elapsed %s ETA %s",
            step, total_steps, mean_metrics["loss"], mean_metrics.get("lr", 0.0),
            mean_metrics["train_agreement"], mean_metrics["img_per_sec"],
            _format_duration(now - train_start), _format_duration(eta))
        window_metrics = []
        window_start = time.time()

      if config.eval.every_steps and step % config.eval.every_steps == 0 and step < total_steps:
        eval_start = time.time()
        run_eval(step)
        window_start += time.time() - eval_start  # Eval time is not training time.
      due_by_steps = config.checkpoint.every_steps and step % config.checkpoint.every_steps == 0
      due_by_time = (config.checkpoint.every_seconds and
                     time.time() - last_save_time >= config.checkpoint.every_seconds)
      if step == total_steps or due_by_steps or due_by_time:
        save(step, unchecked_losses)
        unchecked_losses = []
        last_save_time = time.time()

    train_seconds = time.time() - train_start
    checkpointer.wait()
    if supervised and is_main_process:
      exported = os.path.join(workdir, "teacher.msgpack")
      teachers.save_flax_teacher(
          exported, {"params": state.params, "batch_stats": state.batch_stats})
      logging.info("Exported the trained model as a flax teacher: %s", exported)
    final = run_eval(step)
    writer.flush()
  finally:
    checkpointer.close()
    writer.close()

  steps_this_run = step - start_step
  if not timed_seconds:  # Only the compiling window ran: include it.
    timed_steps, timed_seconds = steps_this_run, train_seconds
  images_per_sec = timed_steps * batch_size / timed_seconds if timed_seconds else 0.0
  result = dict(final)
  result.update(
      steps=int(step), steps_this_run=int(steps_this_run),
      images_per_sec=round(images_per_sec, 2), train_seconds=round(train_seconds, 1),
      wall_seconds=round(time.time() - wall_start, 1), device=_device_description(),
      config=config_label, teacher=teacher_name, student=config.student.name)
  if is_main_process:
    _write_json_atomic(os.path.join(workdir, "result.json"), result)
  return result


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/cifar10_r56_r20.py[:arg].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and result.json.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() (multi-host TPU/GPU: one process per host).")


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of orbax (a dozen lines per save) from our logs."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config override mistakes reported in one line."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    key = str(e).strip("\"'")
    sys.exit(f"error: unknown config key '{key}' in {' '.join(overrides)}; see the "
             "config file for the valid keys.")
  except (flags.Error, ValueError, TypeError) as e:
    sys.exit(f"error: bad command line: {e}")


def main(argv: list[str]) -> None:
  del argv
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  os.makedirs(_WORKDIR.value, exist_ok=True)
  log_file = std_logging.FileHandler(os.path.join(_WORKDIR.value, "train.log"))
  log_file.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  logging.get_absl_logger().addHandler(log_file)
  for handler in (log_file, logging.get_absl_handler()):
    handler.addFilter(_QuietLibraries())
  try:
    result = train_and_evaluate(
        _CONFIG.value, _WORKDIR.value,
        config_label=flags.FLAGS["config"].config_filename)
  except USER_ERRORS as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    logging.error("%s: %s", type(e).__name__, message)
    print(f"error: {type(e).__name__}: {message}", file=sys.stderr, flush=True)
    sys.exit(1)
  print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
  perf.apply_default_xla_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=parse_flags)
