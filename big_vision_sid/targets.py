"""What the student learns to match: one target, chosen once by `config.target`.

  teacher  the frozen pretrained teacher's logits on the student's own (mixed)
           batch: single-image distillation, "function matching" (default).
  self     the same, with the student starting from the teacher's weights
           (same architecture): data-free compression, where the student is
           the teacher's pruned or quantised clone (config.compress).
  labels   one-hot labels of a labelled `dataset:` source: supervised training
           (e.g. of your own teacher, configs/cifar10_supervised_teacher.py).

A target is built before the first step. Inside the jitted step,
`target.logits(variables, batch, x)` returns float32 [B, C] that the loss
compares the student's logits with (`x` is the mixed, normalised input the
student sees; `batch` the raw batch dict). Its `variables` (frozen weights,
or {}) are an argument of the step, so they are placed on devices once.
A new kind of target (e.g. self-distillation into a compressed clone) is a new
`TARGETS` entry; the step and the trainer do not change.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from big_vision_sid import features as features_lib
from big_vision_sid import teachers
from big_vision_sid.registry import Registry

PyTree = Any

# Each entry builds a Target as `builder(config, compute_dtype)`.
TARGETS = Registry("target")


@dataclasses.dataclass(frozen=True)
class Target:
  """The regression target of the fused step.

  Attributes:
    name: what logs and result.json call it (the teacher's model name).
    num_classes: size of the target logits.
    mean: per-channel mean of the [0, 1] inputs, subtracted before the
      networks.
    std: per-channel std the inputs are divided by.
    variables: frozen variables passed to the step ({} when there are none).
    logits: `(variables, batch, x) -> float32 [B, C]`, traced in the step.
    predict: `(variables, x) -> logits` on evaluation images, or None when the
      target has no network to evaluate.
    features: `(variables, x) -> (logits, penultimate features)` of the
      target's network (teacher-guided patch selection), or None.
    needs_labels: the batches must carry "label".
    exports_student: at the end, the trained student is written as a flax
      teacher (`workdir.EXPORTED_TEACHER_FILE`).
    initializes_student: the student starts from `variables` (same
      architecture) instead of a random init.
  """
  name: str
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  variables: PyTree
  logits: Callable[[PyTree, dict[str, jax.Array], jax.Array], jax.Array]
  predict: Callable[[PyTree, jax.Array], jax.Array] | None
  features: Callable[[PyTree, jax.Array], tuple[jax.Array, jax.Array]] | None = None
  needs_labels: bool = False
  exports_student: bool = False
  initializes_student: bool = False


def build_target(config: ml_collections.ConfigDict, compute_dtype: Any) -> Target:
  """The target named by `config.target`, checked against `config.student`."""
  target = TARGETS.get(config.target)(config, compute_dtype)
  if config.student.num_classes != target.num_classes:
    raise ValueError(
        f"student.num_classes={config.student.num_classes} but the target "
        f"{target.name} has {target.num_classes} classes.")
  return target


def from_teacher(teacher: teachers.Teacher) -> Target:
  """Distillation from a loaded frozen teacher (BatchNorm in inference mode)."""

  def predict(variables, x):
    return teacher.model.apply(variables, x, train=False)

  def logits(variables, batch, x):
    del batch  # The teacher labels exactly what the student sees.
    return jax.lax.stop_gradient(predict(variables, x).astype(jnp.float32))

  return Target(
      name=teacher.name, num_classes=teacher.num_classes, mean=teacher.mean,
      std=teacher.std, variables=teacher.variables, logits=logits,
      predict=predict,
      features=functools.partial(features_lib.logits_and_features, teacher.model))


@TARGETS.register("teacher")
def _teacher_target(config: ml_collections.ConfigDict, compute_dtype: Any) -> Target:
  return from_teacher(teachers.load_teacher(config.teacher, dtype=compute_dtype))


@TARGETS.register("self")
def _self_target(config: ml_collections.ConfigDict, compute_dtype: Any) -> Target:
  if config.student.name != config.teacher.name:
    raise ValueError(
        f"target='self' starts the student from the teacher's weights, so "
        f"student.name must equal teacher.name ('{config.teacher.name}'), not "
        f"'{config.student.name}'.")
  target = _teacher_target(config, compute_dtype)
  return dataclasses.replace(target, initializes_student=True)


@TARGETS.register("labels")
def _label_target(config: ml_collections.ConfigDict, compute_dtype: Any) -> Target:
  del compute_dtype
  if config.mixing.mode != "none":
    # One-hot targets of mixed images would need mixed labels.
    raise ValueError(f"target='labels' needs mixing.mode='none', not "
                     f"'{config.mixing.mode}'.")
  num_classes = config.student.num_classes

  def logits(variables, batch, x):
    del variables, x
    return jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)

  # `teacher.mean/std` record the normalisation the exported teacher expects.
  return Target(
      name="labels", num_classes=num_classes,
      mean=tuple(float(m) for m in config.teacher.mean),
      std=tuple(float(s) for s in config.teacher.std),
      variables={}, logits=logits, predict=None, needs_labels=True,
      exports_student=True)
