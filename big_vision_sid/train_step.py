"""The fused distillation step and the evaluation forward pass (pure, jittable).

One compiled program per step does all per-batch math on device: uint8 ->
float, CutMix/MixUp on the global batch, normalisation by the target's
mean/std, the target's logits (the frozen teacher's forward pass, BatchNorm in
inference mode, or one-hot labels; see `targets`), the student's
forward/backward pass and the optimiser update. Teacher and student see the
identical mixed image ("function matching", Beyer et al. 2022).
"""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from big_vision_sid import mixing
from big_vision_sid import targets

PyTree = Any
LossFn = Callable[..., jnp.ndarray]


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jnp.ndarray


def create_train_state(
    rng: jnp.ndarray,
    model: nn.Module,
    tx: optax.GradientTransformation,
    image_shape: tuple[int, int, int],
    initial_variables: PyTree | None = None,
) -> TrainState:
  """Initialises the student and the optimiser state.

  Args:
    rng: seeds the random init and the per-step randomness.
    model: the student.
    tx: its optimiser.
    image_shape: one input's shape.
    initial_variables: start from these variables (e.g. the teacher's, for
      self-distillation) instead of a random init.

  Returns:
    The step-0 state.
  """
  init_rng, train_rng = jax.random.split(rng)
  variables = initial_variables
  if variables is None:
    variables = model.init(init_rng, jnp.zeros((1, *image_shape)), train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
      rng=train_rng,
  )


def to_unit_float(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 [0, 255] (as fed from the host) -> float32 [0, 1]; floats unchanged."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def normalize(images: jnp.ndarray, mean, std) -> jnp.ndarray:
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images - mean) / std


def make_train_step(
    *,
    student: nn.Module,
    target: targets.Target,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    loss_kwargs: dict[str, Any],
    mixing_mode: str,
    mixing_alpha: float,
    mixing_partner: str = "roll",
    schedule: optax.Schedule | None = None,
    student_apply: Callable[..., Any] | None = None,
    bn_train_mode: bool = True,
) -> Callable[[TrainState, PyTree, dict[str, jnp.ndarray]],
              tuple[TrainState, dict[str, jnp.ndarray]]]:
  """Returns `step(state, target_variables, batch) -> (state, metrics)`.

  `batch` is the iterator's dict: `image` (uint8 or float) and whatever the
  target reads (e.g. `label`). The student regresses to
  `target.logits(target_variables, batch, x)` on the same mixed input `x`.
  `student_apply` replaces `student.apply` (e.g. fake-quantised); with
  `bn_train_mode=False` the student's BatchNorm runs in inference mode and
  its running statistics stay as they are.
  """
  apply = student_apply or student.apply

  def step(state: TrainState, target_variables: PyTree, batch: dict[str, jnp.ndarray]):
    step_rng = jax.random.fold_in(state.rng, state.step)
    x = to_unit_float(batch["image"])
    x = mixing.mix_images(step_rng, x, mixing_mode, mixing_alpha, mixing_partner)
    x = normalize(x, target.mean, target.std)
    target_logits = target.logits(target_variables, batch, x)

    def objective(params):
      variables = {"params": params, "batch_stats": state.batch_stats}
      if bn_train_mode:
        # Models with dropout (the audio CNN) draw from the 'dropout' rng.
        logits, updates = apply(
            variables, x, train=True, mutable=["batch_stats"],
            rngs={"dropout": jax.random.fold_in(step_rng, 2)})
        batch_stats = updates["batch_stats"]
      else:
        logits, batch_stats = apply(variables, x, train=False), state.batch_stats
      per_example = loss_fn(logits, target_logits, **loss_kwargs)
      return jnp.mean(per_example), (batch_stats, logits)

    (loss, (batch_stats, logits)), grads = jax.value_and_grad(
        objective, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    agreement = jnp.mean(
        (jnp.argmax(logits, -1) == jnp.argmax(target_logits, -1)).astype(jnp.float32))
    metrics = {
        "loss": loss,
        "grad_norm": optax.global_norm(grads),
        "train_agreement": agreement * 100.0,
    }
    if schedule is not None:
      metrics["lr"] = schedule(state.step)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats,
        opt_state=opt_state)
    return new_state, metrics

  return step


def make_predict_fn(
    *,
    student: nn.Module,
    target: targets.Target,
    student_apply: Callable[..., Any] | None = None,
) -> Callable[[TrainState, PyTree, jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray | None]]:
  """Returns `predict(state, target_variables, images) -> (student, target logits)`.

  The target's logits are None when it has no network (`target.predict`).
  `student_apply` replaces `student.apply` as in `make_train_step`.
  """
  apply = student_apply or student.apply

  def predict(state: TrainState, target_variables: PyTree, images: jnp.ndarray):
    x = normalize(to_unit_float(images), target.mean, target.std)
    student_logits = apply(
        {"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
    target_logits = None
    if target.predict is not None:
      target_logits = target.predict(target_variables, x)
    return student_logits, target_logits

  return predict


def all_finite(tree: PyTree) -> jnp.ndarray:
  """A scalar bool: every leaf of `tree` is finite (checked before saving)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
