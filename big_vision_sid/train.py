r"""Single-image distillation trainer.

  python -m big_vision_sid.train --config=configs/cifar10_r56_r20.py \
      --workdir=workdirs/r56_r20 --config.total_steps=2000

Re-running the same command on the same workdir resumes from the latest
checkpoint. Every run ends with one machine-readable line `RESULT {json}`.

Exit codes: 0 done; 1 a user error (one `error: ...` line on stderr: a bad
config value, a missing file, a workdir in use or not writable); 75
(`preemption.EXIT_CODE`) stopped by SIGTERM/SIGINT after saving a checkpoint
at the step in flight: re-run the same command to resume.
"""

import os
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from big_vision_sid import checkpointing
from big_vision_sid.compression import plan as compression_plan
from big_vision_sid.compression import pruning
from big_vision_sid import cli
from big_vision_sid import config_checks
from big_vision_sid import evaluators
from big_vision_sid import losses
from big_vision_sid import metric_writers
from big_vision_sid import models
from big_vision_sid import optim
from big_vision_sid import parallel
from big_vision_sid import perf
from big_vision_sid import pool_scoring
from big_vision_sid import preemption
from big_vision_sid import provenance
from big_vision_sid import targets
from big_vision_sid import teachers
from big_vision_sid import train_step as train_step_lib
from big_vision_sid import workdir as workdir_lib
from big_vision_sid import workdir_lock
from input_pipeline import device_feed
from input_pipeline import eval_data
from input_pipeline import selection
from input_pipeline import train_data


NonFiniteLossError = cli.NonFiniteLossError


def _calibration_batches(config: ml_collections.ConfigDict,
                         target: targets.Target) -> list[np.ndarray]:
  """Normalised chain patches (no augmentation) to calibrate int8 ranges on."""
  count, size = config.compress.calibration_patches, 256
  patches = train_data.patch_loader(config.input, config.seed)(np.arange(count))
  return [np.asarray(train_step_lib.normalize(
      train_step_lib.to_unit_float(patches[i:i + size]), target.mean, target.std))
          for i in range(0, count, size)]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       config_label: str = "") -> dict[str, Any]:
  """Trains `config.student` to match `config.target`; returns the result.

  The config is checked before anything runs; the workdir is then created
  and locked for the duration, so a second run on it is refused.

  Args:
    config: the experiment config (see configs/common.py).
    workdir: checkpoints, metrics and result.json go here; resumes from it.
      A local path or a URL such as gs://bucket/run.
    config_label: the config file (and argument) recorded with the result.

  Raises:
    config_checks.ConfigError: an invalid config value (nothing was run).
    workdir_lib.WorkdirError: the workdir cannot be created or written.
    workdir_lock.WorkdirInUseError: another live run trains in it.
    preemption.Preempted: SIGTERM/SIGINT stopped it after saving a checkpoint.
  """
  wall_start = time.time()
  config_warnings = config_checks.check_config(config)
  workdir_lib.prepare(workdir)
  with workdir_lock.hold(workdir):
    for warning in config_warnings:
      logging.warning("Config: %s.", warning)
    return _train_in_locked_workdir(config, workdir, config_label, wall_start)


def _train_in_locked_workdir(config: ml_collections.ConfigDict, workdir: str,
                             config_label: str, wall_start: float) -> dict[str, Any]:
  """`train_and_evaluate` once the config is checked and the workdir locked."""
  perf.enable_compilation_cache()
  is_main_process = jax.process_index() == 0
  run_provenance = provenance.collect()
  if is_main_process:
    workdir_lib.write_json(
        workdir_lib.as_path(workdir) / workdir_lib.CONFIG_FILE,
        {**config.to_dict(), workdir_lib.PROVENANCE_KEY: run_provenance})

  # Everything that can fail because of the user's input is checked before
  # the first step, so a bad run never writes a checkpoint.
  compute_dtype = jnp.dtype(config.compute_dtype)
  target = targets.build_target(config, compute_dtype)
  if target.needs_labels and not train_data.has_labels(config.input):
    raise ValueError(
        f"target='{config.target}' needs a labelled dataset: input.source="
        "dataset:folder:ROOT, dataset:tar:PATH.tar.gz[:PREFIX] or dataset:tfds:"
        f"NAME:SPLIT, not '{config.input.source}'.")
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
  plan = compression_plan.build_plan(
      config.get("compress"), total_steps,
      lambda: (student, target.variables,
               _calibration_batches(config, target)))
  image_size = config.input.patch_size
  student_shapes = jax.eval_shape(lambda: student.init(
      jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, 3)), train=False))
  tx = plan.wrap_optimizer(tx, student_shapes.get("batch_stats", {}))
  student_apply = plan.student_apply(student)
  if plan.input_ranges is not None and is_main_process:
    workdir_lib.write_json(os.path.join(workdir, workdir_lib.QUANT_RANGES_FILE),
                           plan.input_ranges)

  devices = parallel.data_parallel()
  batch_size = config.input.batch_size
  devices.check_divisible("input.batch_size", batch_size)
  devices.check_divisible("eval.batch_size", config.eval.batch_size)

  state = jax.jit(
      lambda rng: train_step_lib.create_train_state(
          rng, student, tx, (image_size, image_size, 3),
          target.variables if target.initializes_student else None),
      out_shardings=devices.replicated)(jax.random.PRNGKey(config.seed))
  target_variables = jax.device_put(target.variables, devices.replicated)

  jit_step = devices.jit_train_step(train_step_lib.make_train_step(
      student=student, target=target, tx=tx, loss_fn=loss_fn,
      loss_kwargs=dict(temperature=config.distill.temperature,
                       tau_squared=config.distill.tau_squared,
                       topk=config.distill.topk),
      mixing_mode=config.mixing.mode, mixing_alpha=config.mixing.alpha,
      mixing_partner=config.mixing.partner, schedule=schedule,
      student_apply=student_apply, bn_train_mode=plan.bn_train_mode))
  predict = devices.jit_predict(
      train_step_lib.make_predict_fn(student=student, target=target,
                                     student_apply=student_apply),
      has_target_logits=target.predict is not None)
  check_finite = jax.jit(train_step_lib.all_finite)
  masked_weights_are_zero = jax.jit(pruning.masked_weights_are_zero)

  pool_weights, selection_seconds = None, 0.0
  if selection.is_enabled(config.input):
    pool_weights, selection_seconds = pool_scoring.pool_weights(
        config, target, workdir)
    logging.info("Patch selection '%s': %d pool patches%s.", config.input.selection,
                 len(pool_weights), f", scored in {selection_seconds:.1f}s"
                 if selection_seconds else " (scores from the workdir cache)")

  writer = metric_writers.create_writer(workdir, enabled=is_main_process)
  checkpointer = checkpointing.Checkpointer(
      workdir, keep=config.checkpoint.keep,
      async_save=config.checkpoint.async_save)
  stop_signal = preemption.StopSignal()
  try:
    start_step = 0
    # Unreadable checkpoints are moved aside; the newest intact one is used.
    latest = checkpointer.restore_latest(checkpointing.abstract_like(state))
    if latest is not None:
      _, state, meta = latest
      start_step = int(meta["step"])
      logging.info("Resumed from checkpoint at step %d (%s).", start_step,
                   checkpointer.directory)
      print(f"Resumed from checkpoint at step {start_step}", flush=True)
    else:
      logging.info("No checkpoint in %s: starting at step 0.", checkpointer.directory)

    def run_eval(step: int) -> dict[str, float]:
      eval_start = time.time()
      result = evaluate(
          lambda images: predict(state, target_variables,
                                 devices.global_eval_batch(images)),
          eval_set, config.eval.batch_size)
      writer.write_scalars(step, result)
      cli.log_eval(step, time.time() - eval_start, result)
      return result

    def save(step: int, pending_losses: list[jax.Array]) -> None:
      losses_ok = all(np.isfinite(np.asarray(jax.device_get(pending_losses))))
      if not (losses_ok and bool(check_finite(state.params))):
        raise NonFiniteLossError(
            f"Loss or parameters became non-finite before step {step}; not saving. "
            f"The last checkpoint ({checkpointer.latest_step()}) is intact. Lower "
            "optim.lr, enable optim.grad_clip_norm, or check the teacher and input.")
      if plan.prunes and not bool(masked_weights_are_zero(
          state.params, plan.masks(state.opt_state))):
        raise RuntimeError(f"Pruned weights are not zero at step {step}; not saving.")
      checkpointer.save(step, state, {"step": step, "config": config_label})

    batches = train_data.make_train_iterator(
        config.input, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count(),
        pool_weights=pool_weights)
    device_batches = device_feed.prefetch_to_device(batches, devices.data, size=2)

    throttle = device_feed.Throttle(max_in_flight=2)
    window_metrics: list[dict[str, jax.Array]] = []
    unchecked_losses: list[jax.Array] = []
    last_save_time = time.time()
    train_start = window_start = time.time()
    timed_steps, timed_seconds = 0, 0.0
    step = start_step
    logging.info("Training %s -> %s for %d steps (batch %d on %s).", target.name,
                 config.student.name, total_steps, batch_size,
                 parallel.device_description())
    stop_signal.install()
    while step < total_steps:
      state, metrics = jit_step(state, target_variables, next(device_batches))
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
            workdir_lib.format_duration(now - train_start),
            workdir_lib.format_duration(eta))
        window_metrics = []
        window_start = time.time()

      if config.eval.every_steps and step % config.eval.every_steps == 0 and step < total_steps:
        eval_start = time.time()
        run_eval(step)
        window_start += time.time() - eval_start  # Eval time is not training time.
      due_by_steps = config.checkpoint.every_steps and step % config.checkpoint.every_steps == 0
      due_by_time = (config.checkpoint.every_seconds and
                     time.time() - last_save_time >= config.checkpoint.every_seconds)
      # Every host asks every step, so all of them stop at the same one.
      stopping = stop_signal.reached(step)
      if step == total_steps or due_by_steps or due_by_time or stopping:
        save(step, unchecked_losses)
        unchecked_losses = []
        last_save_time = time.time()
        writer.flush()
        cli.upload_logs()
      if stopping:
        checkpointer.wait()  # Saved before exiting, even with async_save.
        logging.warning("preempted at step %d, checkpoint saved", step)
        raise preemption.Preempted(step)
    stop_signal.uninstall()

    train_seconds = time.time() - train_start
    checkpointer.wait()
    if target.exports_student and is_main_process:
      exported = os.path.join(workdir, workdir_lib.EXPORTED_TEACHER_FILE)
      teachers.save_flax_teacher(
          exported, {"params": state.params, "batch_stats": state.batch_stats})
      logging.info("Exported the trained model as a flax teacher: %s", exported)
    final = run_eval(step)
    writer.flush()
  finally:
    stop_signal.uninstall()
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
      selection_seconds=round(selection_seconds, 1),
      wall_seconds=round(time.time() - wall_start, 1), device=parallel.device_description(),
      config=config_label, teacher=target.name, student=config.student.name)
  if is_main_process:
    # The RESULT line stays short; the file also says what produced it.
    workdir_lib.write_json(
        workdir_lib.as_path(workdir) / workdir_lib.RESULT_FILE,
        {**result, workdir_lib.PROVENANCE_KEY: run_provenance})
  return result


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/cifar10_r56_r20.py[:arg].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and result.json.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() (multi-host TPU/GPU: one process per host).")


def parse_flags(argv: list[str],
                flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl flag parsing, with config override mistakes reported in one line."""
  try:
    return flag_values(argv)
  except (AttributeError, KeyError) as e:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    key = str(e).strip("\"'")
    sys.exit(f"error: unknown config key '{key}' in {' '.join(overrides)}; see the "
             "config file for the valid keys.")
  except (flags.Error, ValueError, TypeError) as e:
    sys.exit(f"error: bad command line: {e}")


def run(config: ml_collections.ConfigDict, workdir: str,
        config_label: str = "") -> dict[str, Any]:
  """What the command line runs: `train_and_evaluate`, logging to train.log.

  The config and the workdir are checked before the log file is opened, so a
  mistake creates nothing.
  """
  config_checks.check_config(config)
  workdir_path = workdir_lib.prepare(workdir)
  # One log per process: the hosts of a multi-host run share the workdir.
  log_file = (workdir_lib.LOG_FILE if jax.process_index() == 0
              else f"train.{jax.process_index()}.log")
  cli.setup_logging(os.fspath(workdir_path / log_file))
  return train_and_evaluate(config, workdir, config_label=config_label)


def main(argv: list[str]) -> None:
  del argv
  if _DISTRIBUTED.value:
    # Cloud TPU, SLURM, Open MPI and Kubernetes are detected by jax itself;
    # elsewhere JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(
        num_processes=int(count) if count else None,
        process_id=int(index) if index else None)
  cli.run_reporting_result(lambda: run(
      _CONFIG.value, _WORKDIR.value,
      config_label=flags.FLAGS["config"].config_filename))


if __name__ == "__main__":
  perf.apply_default_xla_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=parse_flags)
