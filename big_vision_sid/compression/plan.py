"""How a run compresses its student: the trainer's side of `config.compress`.

Data-free compression (paper App. B.10) distils a pretrained model into its
own compressed clone (`config.target = "self"`: the student starts from the
teacher's weights) on patches of one image. `config.compress` says how:

  sparsity, scope        magnitude pruning to this fraction of the conv/dense
                         weights, per layer or with one global threshold;
  schedule               "one_shot" (at the first step) or "polynomial" (TF-MOT:
                         0 -> sparsity between begin_fraction and end_fraction
                         of training, masks updated every `frequency` steps);
  quantize               "none", "int8" (fake-quantised weights per output
                         channel and inputs per tensor, with a straight-through
                         estimator: quantisation-aware fine-tuning; with
                         optim.lr = 0 and one step, post-training int8);
  calibration, ...       how the int8 input ranges are calibrated on patches;
  bn                     "recompute" (BatchNorm in train mode: batch statistics,
                         running averages updated), "frozen" (inference mode:
                         the teacher's running statistics, affine trainable)
                         or "frozen_affine" (statistics and affine frozen).

The plan wraps the optimiser (pruning masks live in its state, so they are
checkpointed), replaces the student's apply (fake quantisation) and fixes the
BatchNorm mode of the step. Without compression it changes nothing.
"""

import dataclasses
from typing import Any, Callable

from flax import traverse_util
import flax.linen as nn
import ml_collections
import numpy as np
import optax

from big_vision_sid.compression import pruning
from big_vision_sid.compression import quantization

SCHEDULES = ("one_shot", "polynomial")
QUANTIZE = ("none", "int8")
BN_MODES = ("recompute", "frozen", "frozen_affine")


@dataclasses.dataclass(frozen=True)
class CompressionPlan:
  """What the trainer changes for `config.compress`.

  Attributes:
    schedule: the pruning schedule, or None without pruning.
    scope: the pruning scope.
    input_ranges: calibrated int8 input range per layer, or None.
    bn: the BatchNorm mode (see the module docstring).
  """
  schedule: pruning.PruningSchedule | None = None
  scope: str = "layer"
  input_ranges: dict[str, float] | None = None
  quantize: str = "none"
  bn: str = "recompute"

  @property
  def prunes(self) -> bool:
    return self.schedule is not None

  @property
  def bn_train_mode(self) -> bool:
    return self.bn == "recompute"

  def wrap_optimizer(self, tx: optax.GradientTransformation, batch_stats: Any
                     ) -> optax.GradientTransformation:
    """The optimiser with frozen BN affine params and pruning, as planned.

    Args:
      tx: the optimiser of the uncompressed run.
      batch_stats: the student's BatchNorm statistics: the modules holding
        them are the BatchNorms whose affine parameters 'frozen_affine'
        freezes.
    """
    if self.bn == "frozen_affine":
      norm_modules = {path[:-1] for path in traverse_util.flatten_dict(batch_stats)}

      def labels(params):
        return traverse_util.unflatten_dict({
            path: "frozen" if path[:-1] in norm_modules else "train"
            for path in traverse_util.flatten_dict(params)})

      tx = optax.multi_transform(
          {"train": tx, "frozen": optax.set_to_zero()}, labels)
    if self.prunes:
      tx = pruning.pruned_optimizer(tx, self.schedule, self.scope)
    return tx

  def student_apply(self, student: nn.Module) -> Callable[..., Any]:
    """`student.apply`, fake-quantised when planned."""
    if self.quantize == "int8":
      return quantization.quantized_apply(student, self.input_ranges, bits=8)
    return student.apply

  def masks(self, opt_state: Any) -> Any:
    """The pruning masks inside an optimiser state of `wrap_optimizer`."""
    return opt_state.masks if self.prunes else None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"compress.{name}='{value}' is not one of {', '.join(choices)}.")


def build_plan(compress: ml_collections.ConfigDict | None, total_steps: int,
               calibration: Callable[[], tuple[nn.Module, Any, list[np.ndarray]]]
               | None = None,
               input_ranges: dict[str, float] | None = None) -> CompressionPlan:
  """The plan of `config.compress` (None or all defaults: no compression).

  Args:
    compress: the `config.compress` block.
    total_steps: the run's steps (the schedule's fractions refer to them).
    calibration: returns (model, variables, normalised input batches) to
      calibrate int8 input ranges on; called only for quantisation without
      `input_ranges`.
    input_ranges: int8 input ranges calibrated before (a finished run's).

  Returns:
    The plan.

  Raises:
    ValueError: an unknown choice or an out-of-range value, named.
  """
  if compress is None:
    return CompressionPlan()
  for name, choices in (("schedule", SCHEDULES), ("quantize", QUANTIZE),
                        ("bn", BN_MODES), ("scope", pruning.SCOPES)):
    _check_choice(name, compress[name], choices)
  sparsity = float(compress.sparsity)
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(f"compress.sparsity must be in [0, 1), got {sparsity}.")
  schedule = None
  if sparsity > 0:
    if compress.schedule == "one_shot":
      schedule = pruning.PruningSchedule(sparsity)
    else:
      schedule = pruning.PruningSchedule.over_fraction(
          sparsity, total_steps, begin_fraction=compress.begin_fraction,
          end_fraction=compress.end_fraction, frequency=compress.frequency)
  if compress.quantize != "int8":
    input_ranges = None
  elif input_ranges is None:
    if calibration is None:
      raise ValueError("compress.quantize='int8' needs calibrated input ranges.")
    model, variables, batches = calibration()
    input_ranges = quantization.calibrate(
        model, variables, batches, method=compress.calibration,
        percentile=compress.percentile, train=False)
  return CompressionPlan(schedule=schedule, scope=compress.scope,
                         input_ranges=input_ranges, quantize=compress.quantize,
                         bn=compress.bn)
