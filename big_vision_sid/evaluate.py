r"""Evaluates a trained run's checkpoint on any eval set, without writing to it.

  python -m big_vision_sid.evaluate --workdir=workdirs/r56_r20 \
      [--dataset=tfds:cifar10:test] [--step=2000] [--batch_size=256] \
      [--max_examples=1000] [--out=eval.json]

The student (and the teacher, unless the run was supervised) runs through the
trainer's predict function, evaluator, eval batch size and data sharding, so
on the run's own eval set it reproduces the numbers of its result.json
exactly. `--dataset` takes any `eval.dataset` spec the trainer accepts. The
workdir is only read, so this also works on a run that is still training or
on a read-only copy. Ends with one machine-readable line `RESULT {json}`.
"""

import time
from typing import Any, Callable, Sequence

import jax

from big_vision_sid import cli
from big_vision_sid import evaluators
from big_vision_sid import parallel
from big_vision_sid import perf
from big_vision_sid import train_step
from big_vision_sid import workdir as workdir_lib
from input_pipeline import eval_data

def evaluate_run(workdir: str, *, dataset: str | None = None,
                 step: int | None = None, batch_size: int | None = None,
                 max_examples: int | None = None) -> dict[str, Any]:
  """Evaluates one checkpoint of the run in `workdir` (read-only).

  Args:
    workdir: the run's directory.
    dataset: an eval set spec (see `input_pipeline.eval_data`); None for the
      run's `eval.dataset`.
    step: the checkpoint; None for the latest.
    batch_size: None for the run's `eval.batch_size`.
    max_examples: evaluate only the first examples; None for the run's
      `eval.max_examples`, 0 for all.

  Returns:
    The evaluator's metrics (student/teacher top-1/top-5 and agreement in %,
    eval_examples) plus `step`, `dataset` and `workdir`.

  Raises:
    FileNotFoundError: no such workdir, config.json, checkpoint or data.
    ValueError: an unknown step (listing the available ones), a bad dataset
      spec or batch size.
    KeyError: an unknown eval scheme or evaluator.
  """
  config = workdir_lib.load_config(workdir)
  dataset = dataset or config.eval.dataset
  batch_size = batch_size or config.eval.batch_size
  if max_examples is None:
    max_examples = config.eval.get("max_examples")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  devices = parallel.data_parallel()
  devices.check_divisible("batch_size", batch_size)
  # Data and evaluator first: a typo fails before the checkpoint is read.
  eval_set = eval_data.load_eval_set(
      dataset, image_size=config.eval.image_size,
      max_examples=max_examples or None)
  evaluate = evaluators.EVALUATORS.get(config.eval.name)

  run = workdir_lib.load_run(workdir, step, sharding=devices.replicated)
  predict = devices.jit_predict(
      train_step.make_predict_fn(student=run.student, target=run.target,
                                 student_apply=run.student_apply),
      has_target_logits=run.target.predict is not None)
  target_variables = jax.device_put(run.target.variables, devices.replicated)
  start = time.time()
  result = evaluate(
      lambda images: predict(run.state, target_variables,
                             devices.global_eval_batch(images)),
      eval_set, batch_size)
  cli.log_eval(run.step, time.time() - start, result)
  return {**result, "step": run.step, "dataset": dataset,
          "workdir": str(workdir_lib.as_path(workdir))}


def _define_flags() -> Callable[[Sequence[str]], None]:
  """Defines the command-line flags; returns `main`."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("workdir", None, "The trained run's directory.",
                      required=True)
  flags.DEFINE_string("dataset", None, "Eval set spec, e.g. "
                      "npz:/path.npz or tfds:cifar10:test; default: the "
                      "run's eval.dataset.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  flags.DEFINE_integer("batch_size", None,
                       "Default: the run's eval.batch_size.")
  flags.DEFINE_integer("max_examples", None, "Evaluate only the first N "
                       "examples (0: all); default: the run's "
                       "eval.max_examples.")
  flags.DEFINE_string("out", None, "Also write the result as JSON here.")
  values = flags.FLAGS

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    perf.enable_compilation_cache()
    cli.setup_logging()

    def evaluate_and_save() -> dict[str, Any]:
      result = evaluate_run(
          values.workdir, dataset=values.dataset, step=values.step,
          batch_size=values.batch_size, max_examples=values.max_examples)
      if values.out:
        workdir_lib.write_json(values.out, result)
      return result

    cli.run_reporting_result(evaluate_and_save)

  return main


if __name__ == "__main__":
  perf.apply_default_xla_flags()
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(_define_flags())
