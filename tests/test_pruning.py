"""Magnitude pruning: hand-checked masks, the TF-MOT schedule, masked Adam."""

import flax
from flax import serialization
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from big_vision_sid import models
from big_vision_sid.compression import pruning


def _toy_params():
  return {
      "a": {"kernel": jnp.array([[1.0, -2.0], [3.0, -4.0]]),
            "bias": jnp.array([0.001, -0.002])},
      "b": {"kernel": jnp.array([[10.0, -20.0]])},
      "bn": {"scale": jnp.array([0.0001, 5.0]), "bias": jnp.array([0.0, 0.0])},
  }


def _resnet8_params(num_classes=10, seed=0):
  """Random-valued params of the right shapes (no init compile)."""
  model = models.build_model("cifar_resnet8", num_classes)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(np.float32),
      flax.core.unfreeze(shapes))


def _small_params(seed=0):
  """A conv, a dense layer and a norm: few leaves, so jits compile fast."""
  rng = np.random.default_rng(seed)
  shapes = {"conv": {"kernel": (3, 3, 4, 8)}, "bn": {"scale": (8,),
                                                     "bias": (8,)},
            "dense": {"kernel": (8, 10), "bias": (10,)}}
  return jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


_compute_masks = jax.jit(pruning.compute_masks, static_argnums=(2,))


def _flat(tree):
  return traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def test_global_50_percent_keeps_the_three_largest_magnitudes():
  # Six prunable weights |1|,|2|,|3|,|4|,|10|,|20|: prune 3 -> keep 4, 10, 20.
  masks = pruning.compute_masks(_toy_params(), 0.5, "global")
  np.testing.assert_array_equal(masks["a"]["kernel"],
                                [[False, False], [False, True]])
  np.testing.assert_array_equal(masks["b"]["kernel"], [[True, True]])


def test_layerwise_50_percent_prunes_half_of_each_kernel():
  # a: keep |3|, |4|; b: keep |20|.
  masks = pruning.compute_masks(_toy_params(), 0.5, "layer")
  np.testing.assert_array_equal(masks["a"]["kernel"],
                                [[False, False], [True, True]])
  np.testing.assert_array_equal(masks["b"]["kernel"], [[False, True]])


def test_biases_and_norm_parameters_are_never_masked():
  params = _toy_params()
  masks = pruning.compute_masks(params, 0.9, "global")
  assert sorted(_flat(masks)) == ["a/kernel", "b/kernel"]
  pruned = pruning.apply_masks(params, masks)
  for name in ("a/bias", "bn/scale", "bn/bias"):
    np.testing.assert_array_equal(_flat(pruned)[name], _flat(params)[name])


def test_ties_never_prune_more_than_asked():
  params = {"d": {"kernel": jnp.zeros((2, 3))}}
  masks = pruning.compute_masks(params, 0.5)
  assert int(masks["d"]["kernel"].sum()) == 3


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_requested_sparsity_on_a_resnet(scope):
  params = _resnet8_params()
  masks = _compute_masks(params, 0.7, scope)
  flat_params, flat_masks = _flat(params), _flat(masks)
  assert all(k.endswith("kernel") for k in flat_masks)
  assert len(flat_masks) == 8  # 7 convs + the linear layer.
  pruned = sum(int((~m).sum()) for m in flat_masks.values())
  total = sum(m.size for m in flat_masks.values())
  if scope == "layer":
    for name, m in flat_masks.items():
      assert int((~m).sum()) == round(0.7 * m.size), name
  else:
    assert pruned == round(0.7 * total)
    # Global keeps exactly the weights above one magnitude threshold.
    kept = np.concatenate([np.abs(flat_params[k])[m].ravel()
                           for k, m in flat_masks.items()])
    dropped = np.concatenate([np.abs(flat_params[k])[~m].ravel()
                              for k, m in flat_masks.items()])
    assert kept.min() >= dropped.max()
  stats = pruning.sparsity_stats(pruning.apply_masks(params, masks))
  assert stats["prunable"] == total
  assert stats["prunable_nonzero"] == total - pruned


def test_polynomial_schedule_at_hand_computed_steps():
  schedule = pruning.PruningSchedule(0.5, begin_step=0, end_step=100,
                                     frequency=10)
  expected = {
      0: 0.0,
      5: 0.0,  # Held until the next update at step 10.
      10: 0.5 * (1 - 0.9**3),  # 0.1355
      50: 0.5 * (1 - 0.5**3),  # 0.4375
      59: 0.4375,
      90: 0.5 * (1 - 0.1**3),  # 0.4995
      99: 0.4995,
      100: 0.5,
      1000: 0.5,
  }
  got = jax.jit(jax.vmap(lambda s: pruning.sparsity_at(s, schedule)))(
      jnp.array(list(expected)))
  np.testing.assert_allclose(got, list(expected.values()), rtol=1e-6)
  updates = [s for s in range(200) if schedule.is_update_step(s)]
  assert updates == list(range(0, 101, 10))


def test_schedule_before_begin_initial_value_and_unaligned_end():
  schedule = pruning.PruningSchedule(0.8, initial=0.2, begin_step=20,
                                     end_step=95, frequency=10)
  assert float(pruning.sparsity_at(19, schedule)) == 0.0
  np.testing.assert_allclose(pruning.sparsity_at(20, schedule), 0.2)
  # Step 90: progress 70/75, s = 0.8 - 0.6 * (5/75)^3.
  np.testing.assert_allclose(pruning.sparsity_at(94, schedule),
                             0.8 - 0.6 * (5 / 75)**3, rtol=1e-6)
  np.testing.assert_allclose(pruning.sparsity_at(95, schedule), 0.8)
  assert bool(schedule.is_update_step(95))
  assert not bool(schedule.is_update_step(100))


def test_one_shot_schedule():
  schedule = pruning.PruningSchedule.over_fraction(0.6, 1000)
  assert (schedule.begin_step, schedule.end_step) == (0, 0)
  np.testing.assert_allclose(pruning.sparsity_at(0, schedule), 0.6)
  np.testing.assert_allclose(pruning.sparsity_at(500, schedule), 0.6)
  assert [s for s in range(50) if schedule.is_update_step(s)] == [0]
  gradual = pruning.PruningSchedule.over_fraction(
      0.6, 1000, begin_fraction=0.1, end_fraction=0.5, frequency=25)
  assert (gradual.begin_step, gradual.end_step, gradual.frequency) == (
      100, 500, 25)


def _adam_run(tx, params, opt_state, masks, steps, seed):
  """`steps` jitted updates with random gradients; grads masked if asked."""

  @jax.jit
  def step(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params, masks=masks)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    grads = jax.tree.map(
        lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    params, opt_state = step(params, opt_state, grads)
  return params, opt_state


def _masked_adam_run(params, masks, steps, seed):
  tx = pruning.masked_optimizer(optax.adam(1e-2))
  return _adam_run(tx, params, tx.init(params), masks, steps, seed)[0]


def test_masked_adam_keeps_pruned_weights_exactly_zero():
  params = _resnet8_params()
  tx = pruning.masked_optimizer(optax.adam(1e-2))
  # Dense steps first, so the weights pruned next carry Adam momentum.
  params, opt_state = _adam_run(tx, params, tx.init(params),
                                pruning.init_masks(params), 3, seed=0)
  masks = _compute_masks(params, 0.5, "global")
  pruned = pruning.apply_masks(params, masks)
  after, _ = _adam_run(tx, pruned, opt_state, masks, 5, seed=1)
  flat_pruned, flat_after = _flat(pruned), _flat(after)
  for name, m in _flat(masks).items():
    m = np.asarray(m)
    assert np.all(np.asarray(flat_after[name])[~m] == 0), name
    # The kept weights did train.
    assert np.all(np.asarray(flat_after[name])[m]
                  != np.asarray(flat_pruned[name])[m]), name
  assert not np.array_equal(flat_after["bn1/scale"], flat_pruned["bn1/scale"])
  # Masking the gradients alone is not enough: momentum revives the weights.
  grads_only = optax.with_extra_args_support(optax.adam(1e-2))

  def masked_grads_update(grads, state, params, *, masks):
    return grads_only.update(pruning.apply_masks(grads, masks), state, params)

  revived, _ = _adam_run(
      optax.GradientTransformationExtraArgs(grads_only.init,
                                            masked_grads_update),
      pruned, opt_state, masks, 1, seed=1)
  kernel = "layer1_0/conv1/kernel"
  assert np.count_nonzero(_flat(revived)[kernel]) > np.count_nonzero(
      flat_pruned[kernel])


def test_gradual_pruning_inside_jit_is_monotone_and_reaches_target():
  params = _small_params()
  schedule = pruning.PruningSchedule(0.75, begin_step=2, end_step=10,
                                     frequency=2)
  tx = pruning.masked_optimizer(optax.adam(1e-2))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, masks, opt_state, step, grads):
    masks = pruning.update_masks(params, masks, step, schedule, "layer")
    params = pruning.apply_masks(params, masks)
    updates, opt_state = tx.update(grads, opt_state, params, masks=masks)
    return optax.apply_updates(params, updates), masks, opt_state

  masks = pruning.init_masks(params)
  previous = _flat(masks)
  sparsities = []
  rng = np.random.default_rng(3)
  for t in range(12):
    grads = jax.tree.map(
        lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    params, masks, opt_state = step(params, masks, opt_state, t, grads)
    current = _flat(masks)
    for name, m in current.items():
      assert not np.any(m & ~previous[name]), f"{name} revived at step {t}"
      assert np.all(_flat(params)[name][~m] == 0), name
    previous = current
    kernel = current["conv/kernel"]
    sparsities.append(1 - int(kernel.sum()) / kernel.size)
  # Updates at 2 (initial sparsity 0), 4, 6, 8, 10 of a 288-weight kernel.
  expected = [0.0] * 4 + [125 / 288] * 2 + [189 / 288] * 2 + [213 / 288] * 2
  np.testing.assert_allclose(sparsities, expected + [0.75] * 2)


def test_masks_survive_msgpack_and_orbax_round_trips(tmp_path):
  params = _small_params()
  masks = _compute_masks(params, 0.5, "global")
  state = {"params": pruning.apply_masks(params, masks), "masks": masks}
  restored_msgpack = serialization.msgpack_restore(
      serialization.msgpack_serialize(jax.tree.map(np.asarray, state)))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", state)
  checkpointer.wait_until_finished()
  restored_orbax = checkpointer.restore(
      tmp_path / "ckpt", jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
  for restored in (restored_msgpack, restored_orbax):
    flat, expected = _flat(restored), _flat(state)
    assert sorted(flat) == sorted(expected)
    for name, value in expected.items():
      assert flat[name].dtype == value.dtype, name
      np.testing.assert_array_equal(flat[name], value, err_msg=name)
    after = _masked_adam_run(restored["params"], restored["masks"], 2, 2)
    for name, m in _flat(restored["masks"]).items():
      assert np.all(_flat(after)[name][~np.asarray(m)] == 0), name


def test_mask_shape_mismatch_names_the_parameter():
  masks = pruning.init_masks(_resnet8_params(10))
  other = _resnet8_params(100)
  with pytest.raises(ValueError, match=r"linear/kernel has shape \(64, 10\)"):
    pruning.apply_masks(other, masks)
  with pytest.raises(ValueError, match="linear/kernel"):
    pruning.update_masks(other, masks, 0, pruning.PruningSchedule(0.5))
  partial = flax.core.unfreeze(masks)
  del partial["linear"]
  with pytest.raises(ValueError, match="linear/kernel"):
    pruning.update_masks(_resnet8_params(10), partial, 0,
                         pruning.PruningSchedule(0.5))
  with pytest.raises(ValueError, match="no matching parameter"):
    pruning.apply_masks({"x": {"kernel": jnp.ones((2, 2))}}, masks)


def test_bad_arguments_are_clear_errors():
  with pytest.raises(ValueError, match="Unknown pruning scope 'chan'"):
    pruning.compute_masks(_toy_params(), 0.5, "chan")
  with pytest.raises(ValueError, match="Sparsity must be in"):
    pruning.compute_masks(_toy_params(), 1.5)
  with pytest.raises(ValueError, match="begin_step <= end_step"):
    pruning.PruningSchedule(0.5, begin_step=10, end_step=5)
  with pytest.raises(ValueError, match="frequency"):
    pruning.PruningSchedule(0.5, end_step=5, frequency=0)
  with pytest.raises(ValueError, match="nothing to prune"):
    pruning.compute_masks({"bn": {"scale": jnp.ones(3)}}, 0.5)
