"""models.layers.BatchNorm against flax's nn.BatchNorm (the reference)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid.models import layers


def _pair(momentum=0.9, epsilon=1e-5, dtype=jnp.float32):
  kwargs = dict(momentum=momentum, epsilon=epsilon, dtype=dtype)
  return (layers.BatchNorm(use_running_average=False, **kwargs),
          nn.BatchNorm(use_running_average=False, **kwargs))


def _inputs(shape, seed=0):
  x = jax.random.normal(jax.random.PRNGKey(seed), shape) * 3.0 + 1.5
  scale = jnp.linspace(0.5, 1.5, shape[-1])
  bias = jnp.linspace(-1.0, 1.0, shape[-1])
  weights = jax.random.normal(jax.random.PRNGKey(seed + 1), shape)
  return x, {"scale": scale, "bias": bias}, weights


@pytest.mark.parametrize("shape", [(8, 6, 6, 4), (16, 5, 3, 32)])
def test_same_variables_outputs_and_running_stats(shape):
  ours, ref = _pair()
  x, params, _ = _inputs(shape)
  ours_vars = ours.init(jax.random.PRNGKey(0), x)
  ref_vars = ref.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, ours_vars) == jax.tree.map(jnp.shape, ref_vars)
  variables = {"params": params, "batch_stats": ref_vars["batch_stats"]}
  y, ours_stats = ours.apply(variables, x, mutable=["batch_stats"])
  y_ref, ref_stats = ref.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(ours_stats), jax.tree.leaves(ref_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Inference mode uses the running statistics just updated.
  eval_vars = {"params": params, **ours_stats}
  y_eval = ours.clone(use_running_average=True).apply(eval_vars, x)
  y_eval_ref = ref.clone(use_running_average=True).apply(eval_vars, x)
  np.testing.assert_allclose(y_eval, y_eval_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 6, 6, 4), (4, 3, 3, 16)])
def test_gradients_match_flax(shape):
  ours, ref = _pair()
  x, params, weights = _inputs(shape, seed=3)
  stats = ref.init(jax.random.PRNGKey(0), x)["batch_stats"]

  def loss(module, params, x):
    y, _ = module.apply({"params": params, "batch_stats": stats}, x,
                        mutable=["batch_stats"])
    return jnp.sum(jnp.tanh(y) * weights)

  grads = jax.grad(lambda p, x: loss(ours, p, x), argnums=(0, 1))(params, x)
  grads_ref = jax.grad(lambda p, x: loss(ref, p, x), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_statistics_outputs_have_exact_gradients():
  """The (mean, var) outputs' VJP matches autodiff of the plain formula."""
  x, params, _ = _inputs((6, 4, 4, 3), seed=5)

  def plain(x):
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x), axis=(0, 1, 2)) - mean**2
    return mean, var

  def objective(stats_fn, x):
    mean, var = stats_fn(x)
    return jnp.sum(mean * jnp.arange(1.0, 4.0)) + jnp.sum(var * jnp.arange(3.0))

  ours = jax.grad(lambda x: objective(
      lambda x: layers.batch_norm_train(x, params["scale"], params["bias"],
                                        1e-5)[1:], x))(x)
  np.testing.assert_allclose(ours, jax.grad(lambda x: objective(plain, x))(x),
                             rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_keeps_float32_statistics():
  ours, ref = _pair(dtype=jnp.bfloat16)
  x, params, _ = _inputs((8, 4, 4, 8))
  stats = ref.init(jax.random.PRNGKey(0), x)["batch_stats"]
  variables = {"params": params, "batch_stats": stats}
  y, new = ours.apply(variables, x, mutable=["batch_stats"])
  y_ref, new_ref = ref.apply(variables, x, mutable=["batch_stats"])
  assert y.dtype == jnp.bfloat16
  assert new["batch_stats"]["mean"].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y, np.float32),
                             np.asarray(y_ref, np.float32), atol=0.05)
  np.testing.assert_allclose(new["batch_stats"]["var"],
                             new_ref["batch_stats"]["var"], rtol=1e-2)


def test_materialize_is_the_identity_under_jit_and_grad():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(jax.jit(layers.materialize)(x), x)
  np.testing.assert_array_equal(
      jax.grad(lambda x: jnp.sum(layers.materialize(x) ** 2))(x), 2 * x)
