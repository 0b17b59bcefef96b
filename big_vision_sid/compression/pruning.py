"""Unstructured magnitude pruning: masks, the TF-MOT sparsity schedule, updates.

Masks are a nested dict with the structure of the pruned subset of `params`
(only the leaves `predicate` selects: conv and dense kernels by default, never
BatchNorm parameters or biases) holding booleans, True = kept. Everything here
is a pure function of arrays and the (possibly traced) step, so it runs inside
the jitted train step:

    masks = update_masks(params, masks, step, schedule, scope)
    params = apply_masks(params, masks)          # the forward pass sees these
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params, masks=masks)
    params = optax.apply_updates(params, updates)  # still exactly zero

with `tx = masked_optimizer(optax.adam(...))`. The masks belong in the train
state (checkpointed with it): restoring them is what keeps a resumed run's
pruned weights pruned, and `apply_masks` refuses masks that do not fit.
"""

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

Predicate = Callable[[tuple[str, ...], Any], bool]
SCOPES = ("layer", "global")


def is_prunable(path: tuple[str, ...], leaf: Any) -> bool:
  """Conv (HWIO) and dense ([in, out]) kernels; not biases or norm scales."""
  return path[-1] == "kernel" and np.ndim(leaf) >= 2


def _flat(tree: Any) -> dict[tuple[str, ...], Any]:
  return traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _prunable_leaves(params: Any, predicate: Predicate) -> dict:
  leaves = {p: v for p, v in _flat(params).items() if predicate(p, v)}
  if not leaves:
    raise ValueError("No parameter matches the pruning predicate: nothing to"
                     " prune.")
  return leaves


def _check_sparsity(sparsity: Any) -> None:
  if isinstance(sparsity, (int, float)) and not 0 <= sparsity <= 1:
    raise ValueError(f"Sparsity must be in [0, 1], got {sparsity}.")


def _keep_mask(magnitudes: jnp.ndarray, sparsity: Any) -> jnp.ndarray:
  """True for all but the round(sparsity * n) smallest entries of a 1-D array.

  Ranks instead of a threshold so that ties (e.g. weights that are already
  zero) never prune more than asked; a stable sort breaks them by position.
  """
  n = magnitudes.size
  num_pruned = jnp.round(jnp.asarray(sparsity, jnp.float32) * n).astype(
      jnp.int32)
  order = jnp.argsort(magnitudes, stable=True)
  ranks = jnp.zeros((n,), jnp.int32).at[order].set(
      jnp.arange(n, dtype=jnp.int32))
  return ranks >= num_pruned


def compute_masks(params: Any, sparsity: Any, scope: str = "layer",
                  predicate: Predicate = is_prunable) -> dict:
  """Magnitude masks that prune a `sparsity` fraction of the prunable weights.

  Args:
    params: the model's parameters (nested dict of arrays).
    sparsity: fraction in [0, 1] to prune; a float or a traced scalar.
    scope: "layer" prunes that fraction of every selected tensor; "global"
      ranks all selected weights together, so layers end up unevenly sparse.
    predicate: (path, leaf) -> whether the leaf is pruned.

  Returns:
    Boolean masks (True = kept) for the selected leaves, nested like params.

  Raises:
    ValueError: unknown scope, sparsity outside [0, 1], nothing to prune.
  """
  if scope not in SCOPES:
    raise ValueError(f"Unknown pruning scope '{scope}'. Known: {SCOPES}.")
  _check_sparsity(sparsity)
  leaves = _prunable_leaves(params, predicate)
  if scope == "layer":
    masks = {p: _keep_mask(jnp.abs(v).ravel(), sparsity).reshape(v.shape)
             for p, v in leaves.items()}
  else:
    keep = _keep_mask(
        jnp.concatenate([jnp.abs(v).ravel() for v in leaves.values()]),
        sparsity)
    sizes = [math.prod(v.shape) for v in leaves.values()]
    pieces = jnp.split(keep, np.cumsum(sizes)[:-1])
    masks = {p: piece.reshape(v.shape)
             for (p, v), piece in zip(leaves.items(), pieces)}
  return traverse_util.unflatten_dict(masks)


def init_masks(params: Any, predicate: Predicate = is_prunable) -> dict:
  """All-True masks (nothing pruned yet) for the selected leaves."""
  return traverse_util.unflatten_dict({
      p: jnp.ones(jnp.shape(v), jnp.bool_)
      for p, v in _prunable_leaves(params, predicate).items()})


def _checked_pairs(tree: Any, masks: Any) -> tuple[dict, dict]:
  flat_tree, flat_masks = _flat(tree), _flat(masks)
  for path, mask in flat_masks.items():
    name = "/".join(path)
    if path not in flat_tree:
      raise ValueError(
          f"Pruning mask for {name} has no matching parameter; the masks do"
          " not belong to this model.")
    if tuple(jnp.shape(mask)) != tuple(jnp.shape(flat_tree[path])):
      raise ValueError(
          f"Pruning mask for {name} has shape {tuple(jnp.shape(mask))} but the"
          f" parameter has shape {tuple(jnp.shape(flat_tree[path]))}.")
  return flat_tree, flat_masks


def apply_masks(tree: Any, masks: Any) -> Any:
  """Zeros the masked entries of `tree` (params, gradients or updates).

  Leaves without a mask pass through. The result is exactly zero where a
  mask is False, whatever the value was (also -0.0, inf or nan).

  Raises:
    ValueError: a mask whose parameter is missing or has another shape,
      naming the parameter (e.g. masks restored for a different model).
  """
  flat_tree, flat_masks = _checked_pairs(tree, masks)
  out = {p: (jnp.where(flat_masks[p], v, jnp.zeros((), v.dtype))
             if p in flat_masks else v) for p, v in flat_tree.items()}
  return traverse_util.unflatten_dict(out)


def masked_optimizer(
    inner: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
  """Wraps an optimiser so masked weights get zero gradients and stay zero.

  `update(grads, state, params, masks=masks)` zeros the masked gradients,
  runs `inner`, and replaces the masked updates by `-params`, so that
  `optax.apply_updates` lands exactly on 0 even when `inner` has momentum
  from before the weight was pruned (Adam, SGD momentum, weight decay).

  Args:
    inner: any optax transformation (it may take extra args, passed through).

  Returns:
    The wrapped transformation; its state is `inner`'s state.
  """
  inner = optax.with_extra_args_support(inner)

  def update_fn(grads, state, params=None, *, masks, **extra_args):
    if params is None:
      raise ValueError("masked_optimizer needs params in update().")
    grads = apply_masks(grads, masks)
    updates, state = inner.update(grads, state, params, **extra_args)
    flat_updates, flat_masks = _checked_pairs(updates, masks)
    flat_params = _flat(params)
    out = {p: (jnp.where(flat_masks[p], u, -flat_params[p].astype(u.dtype))
               if p in flat_masks else u) for p, u in flat_updates.items()}
    return traverse_util.unflatten_dict(out), state

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)


@dataclasses.dataclass(frozen=True)
class PruningSchedule:
  """TF-MOT's polynomial-decay sparsity schedule.

  s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^power at the update
  steps t0, t0 + frequency, ... before t1, and at t1 itself; the sparsity
  holds between updates, is 0 (no pruning) before t0 and s_f from t1 on.
  Unlike TF-MOT, t1 is always an update step, so the target is reached even
  when t1 - t0 is not a multiple of `frequency`. begin_step == end_step is
  one-shot pruning to s_f at that step.

  Attributes:
    target: final sparsity s_f in [0, 1].
    initial: sparsity s_i at begin_step.
    begin_step: t0, the first pruning step.
    end_step: t1 >= t0, where the target is reached.
    frequency: steps between mask updates (>= 1).
    power: exponent of the decay (TF-MOT: 3).
  """
  target: float
  initial: float = 0.0
  begin_step: int = 0
  end_step: int = 0
  frequency: int = 1
  power: float = 3.0

  def __post_init__(self):
    _check_sparsity(self.target)
    _check_sparsity(self.initial)
    if self.begin_step < 0 or self.end_step < self.begin_step:
      raise ValueError(
          f"Pruning needs 0 <= begin_step <= end_step, got {self.begin_step}"
          f" and {self.end_step}.")
    if self.frequency < 1:
      raise ValueError(
          f"Pruning frequency must be >= 1, got {self.frequency}.")

  @classmethod
  def over_fraction(cls, target: float, total_steps: int, *,
                    begin_fraction: float = 0.0, end_fraction: float = 0.0,
                    frequency: int = 1, **kwargs: Any) -> "PruningSchedule":
    """Begins and ends at fractions of `total_steps` (0, 0 = one-shot)."""
    return cls(target, begin_step=round(begin_fraction * total_steps),
               end_step=round(end_fraction * total_steps),
               frequency=frequency, **kwargs)

  def is_update_step(self, step: Any) -> jnp.ndarray:
    """Whether the masks are recomputed at `step` (a traced int is fine)."""
    step = jnp.asarray(step)
    in_range = (step >= self.begin_step) & (step < self.end_step)
    on_turn = (step - self.begin_step) % self.frequency == 0
    return (in_range & on_turn) | (step == self.end_step)


def sparsity_at(step: Any, schedule: PruningSchedule) -> jnp.ndarray:
  """The sparsity in force at `step` (float32 scalar; a traced step is fine)."""
  step = jnp.asarray(step, jnp.int32)
  t0, t1 = schedule.begin_step, schedule.end_step
  last_update = t0 + (step - t0) // schedule.frequency * schedule.frequency
  progress = jnp.where(
      step >= t1, 1.0,
      (last_update - t0).astype(jnp.float32) / max(t1 - t0, 1))
  sparsity = schedule.target + (schedule.initial - schedule.target) * (
      1.0 - progress) ** schedule.power
  return jnp.where(step < t0, 0.0, sparsity).astype(jnp.float32)


def update_masks(params: Any, masks: Any, step: Any,
                 schedule: PruningSchedule, scope: str = "layer",
                 predicate: Predicate = is_prunable) -> dict:
  """Recomputes the masks from `params` on update steps, else keeps `masks`.

  Pruned weights are exactly zero and so rank first: as the scheduled
  sparsity only grows, a weight once pruned stays pruned.

  Raises:
    ValueError: `masks` do not cover exactly the prunable parameters with
      their shapes (e.g. restored for another model or predicate).
  """
  _checked_pairs(params, masks)
  expected = set(_prunable_leaves(params, predicate))
  if set(_flat(masks)) != expected:
    names = sorted("/".join(p) for p in expected ^ set(_flat(masks)))
    raise ValueError(
        f"Pruning masks do not match the prunable parameters: {names}.")
  return jax.lax.cond(
      schedule.is_update_step(step),
      lambda: compute_masks(params, sparsity_at(step, schedule), scope,
                            predicate),
      lambda: traverse_util.unflatten_dict(
          {p: jnp.asarray(m, jnp.bool_) for p, m in _flat(masks).items()}))


def sparsity_stats(params: Any, predicate: Predicate = is_prunable
                   ) -> dict[str, float]:
  """Parameter, prunable and non-zero counts, and the prunable sparsity."""
  flat = _flat(params)
  prunable = {p: v for p, v in flat.items() if predicate(p, v)}
  stats = {
      "params": sum(int(np.size(v)) for v in flat.values()),
      "nonzero": sum(int(np.count_nonzero(v)) for v in flat.values()),
      "prunable": sum(int(np.size(v)) for v in prunable.values()),
      "prunable_nonzero": sum(int(np.count_nonzero(v))
                              for v in prunable.values()),
  }
  stats["sparsity"] = 1.0 - stats["prunable_nonzero"] / max(
      stats["prunable"], 1)
  return stats


class PruningState(NamedTuple):
  """The optimiser state of `pruned_optimizer`: the masks travel with it."""
  inner: Any
  masks: Any
  count: jnp.ndarray


def pruned_optimizer(inner: optax.GradientTransformation,
                     schedule: PruningSchedule, scope: str = "layer",
                     predicate: Predicate = is_prunable
                     ) -> optax.GradientTransformation:
  """`inner` with scheduled magnitude pruning, masks in the optimiser state.

  At every update the masks are recomputed on the schedule's steps (from the
  current params), masked gradients are zeroed and masked weights are set to
  exactly zero by the update itself (`masked_optimizer`). Because the masks
  live in the optimiser state, a checkpoint of the train state carries them
  and a resumed run keeps exactly the same pruned weights.

  Args:
    inner: the optimiser of the unpruned model.
    schedule: when and how far to prune (its steps count updates).
    scope: "layer" (each kernel to the sparsity) or "global" (one threshold).
    predicate: which parameters are prunable.

  Returns:
    A plain optax transformation (`update(grads, state, params)`).
  """
  masked = masked_optimizer(inner)

  def init(params):
    return PruningState(inner=inner.init(params),
                        masks=init_masks(params, predicate),
                        count=jnp.zeros((), jnp.int32))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("pruned_optimizer needs params in update().")
    masks = update_masks(params, state.masks, state.count, schedule, scope,
                         predicate)
    updates, inner_state = masked.update(grads, state.inner, params, masks=masks)
    return updates, PruningState(inner_state, masks, state.count + 1)

  return optax.GradientTransformation(init, update)


def masked_weights_are_zero(params: Any, masks: Any) -> jnp.ndarray:
  """A scalar bool: every weight the masks prune is exactly 0 in `params`."""
  flat_params, flat_masks = _checked_pairs(params, masks)
  checks = [jnp.all(jnp.where(m, True, flat_params[p] == 0))
            for p, m in flat_masks.items()]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)
