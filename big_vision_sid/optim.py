"""Optimisers and learning-rate schedules built from a config.

`optim_cfg` fields (defaults in brackets):
  name: `adam`, `adamw` or `sgd` (momentum SGD).
  lr: peak learning rate.
  weight_decay [0.0]: `adamw` uses optax's decoupled decay (the update gets
    `- lr * weight_decay * param`, outside the Adam moments); `adam` and `sgd`
    add the classic L2 gradient `weight_decay * param` before the optimiser.
    Only parameters with ndim > 1 decay: BatchNorm scales/biases and dense or
    conv biases are left alone.
  momentum [0.9], nesterov [False]: for `sgd`.
  b1 [0.9], b2 [0.999]: for `adam` / `adamw`.
  schedule [`cosine`]: `cosine`, `step` or `constant`, applied after warmup.
  warmup_steps [0]: linear warmup from 0 to lr.
  end_lr_factor [0.0]: the cosine ends at lr * end_lr_factor.
  step_boundaries [(0.5, 0.75)]: fractions of total_steps at which `step`
    multiplies the lr by step_decay [0.1].
  grad_clip_norm [None]: clip by global norm first; None or 0 disables.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from big_vision_sid.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("lr schedule")


def resolve_total_steps(
    total_steps: int | None,
    total_epochs: float | None,
    steps_per_epoch: int | None,
) -> int:
  """Number of train steps from a step or epoch budget.

  Args:
    total_steps: explicit step count; wins when both budgets are given.
    total_epochs: budget in passes over a finite patch dataset.
    steps_per_epoch: steps per pass; None for an infinite patch stream.

  Returns:
    The positive step count; epochs round up to whole steps.

  Raises:
    ValueError: when no budget is given, it is not positive, or epochs are
      asked of a dataset without a finite length.
  """
  if total_steps is not None:
    if total_steps <= 0:
      raise ValueError(f"total_steps must be positive, got {total_steps}.")
    return int(total_steps)
  if total_epochs is None:
    raise ValueError("Set either total_steps or total_epochs.")
  if total_epochs <= 0:
    raise ValueError(f"total_epochs must be positive, got {total_epochs}.")
  if steps_per_epoch is None:
    raise ValueError(
        f"total_epochs={total_epochs} needs a finite patch dataset, but "
        "steps_per_epoch is unknown (infinite patch stream): set total_steps.")
  if steps_per_epoch <= 0:
    raise ValueError(
        f"steps_per_epoch must be positive, got {steps_per_epoch}.")
  return max(1, math.ceil(total_epochs * steps_per_epoch))


@SCHEDULES.register("constant")
def _constant(optim_cfg: Any, total_steps: int, warmup_steps: int):
  del total_steps, warmup_steps
  lr = optim_cfg.lr
  return lambda step: jnp.full((), lr, jnp.float32)


@SCHEDULES.register("cosine")
def _cosine(optim_cfg: Any, total_steps: int, warmup_steps: int):
  lr = optim_cfg.lr
  end_lr = lr * optim_cfg.get("end_lr_factor", 0.0)
  # Warmup longer than training leaves a 1-step decay rather than failing, so
  # smoke runs can shorten total_steps without touching the warmup.
  decay_steps = max(total_steps - warmup_steps, 1)

  def schedule(step):
    progress = jnp.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
    return end_lr + (lr - end_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  return schedule


@SCHEDULES.register("step")
def _step(optim_cfg: Any, total_steps: int, warmup_steps: int):
  del warmup_steps
  fractions = tuple(optim_cfg.get("step_boundaries", (0.5, 0.75)))
  if any(not 0.0 <= f <= 1.0 for f in fractions):
    raise ValueError(
        f"step_boundaries are fractions of total_steps in [0, 1], got "
        f"{fractions}.")
  boundaries = jnp.asarray([round(f * total_steps) for f in fractions],
                           jnp.int32)
  lr = optim_cfg.lr
  decay = optim_cfg.get("step_decay", 0.1)

  def schedule(step):
    passed = jnp.sum(step >= boundaries)
    return lr * decay ** passed
  return schedule


def make_schedule(optim_cfg: Any, total_steps: int) -> optax.Schedule:
  """The learning rate as a jittable function of the step (0-based).

  Args:
    optim_cfg: the optimiser config (see module docstring).
    total_steps: the training length in steps.

  Returns:
    schedule(step) -> float32 scalar: `lr * step / warmup_steps` during
    warmup, then the `schedule` named in the config.
  """
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}.")
  warmup_steps = int(optim_cfg.get("warmup_steps", 0))
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
  main = SCHEDULES.get(optim_cfg.get("schedule", "cosine"))(
      optim_cfg, total_steps, warmup_steps)
  lr = optim_cfg.lr

  def schedule(step):
    step = jnp.asarray(step)
    if warmup_steps == 0:
      return jnp.asarray(main(step), jnp.float32)
    warmup = lr * step / warmup_steps
    return jnp.asarray(jnp.where(step < warmup_steps, warmup, main(step)),
                       jnp.float32)
  return schedule


def decay_mask(params: Any) -> Any:
  """True for weights that decay: ndim > 1 (not biases or norm scales)."""
  return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def _l2_weight_decay(optim_cfg: Any) -> list[optax.GradientTransformation]:
  weight_decay = optim_cfg.get("weight_decay", 0.0)
  if not weight_decay:
    return []
  return [optax.add_decayed_weights(weight_decay, mask=decay_mask)]


@OPTIMIZERS.register("adam")
def _adam(optim_cfg: Any,
          schedule: optax.Schedule) -> optax.GradientTransformation:
  return optax.chain(
      *_l2_weight_decay(optim_cfg),
      optax.adam(schedule, b1=optim_cfg.get("b1", 0.9),
                 b2=optim_cfg.get("b2", 0.999)))


@OPTIMIZERS.register("adamw")
def _adamw(optim_cfg: Any,
           schedule: optax.Schedule) -> optax.GradientTransformation:
  return optax.adamw(
      schedule, b1=optim_cfg.get("b1", 0.9), b2=optim_cfg.get("b2", 0.999),
      weight_decay=optim_cfg.get("weight_decay", 0.0), mask=decay_mask)


@OPTIMIZERS.register("sgd")
def _sgd(optim_cfg: Any,
         schedule: optax.Schedule) -> optax.GradientTransformation:
  return optax.chain(
      *_l2_weight_decay(optim_cfg),
      optax.sgd(schedule, momentum=optim_cfg.get("momentum", 0.9),
                nesterov=optim_cfg.get("nesterov", False)))


def make_optimizer(
    optim_cfg: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimiser named in `optim_cfg` and its lr schedule.

  Args:
    optim_cfg: the optimiser config (see module docstring).
    total_steps: the training length in steps.

  Returns:
    (gradient transformation, schedule); the schedule is returned so the
    trainer can log the learning rate.
  """
  builder = OPTIMIZERS.get(optim_cfg.name)
  schedule = make_schedule(optim_cfg, total_steps)
  transform = builder(optim_cfg, schedule)
  clip_norm = optim_cfg.get("grad_clip_norm", None)
  if clip_norm:
    transform = optax.chain(optax.clip_by_global_norm(clip_norm), transform)
  return transform, schedule
