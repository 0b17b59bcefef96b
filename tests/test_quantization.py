"""Int8 fake quantisation: the grid, the STE, calibration, PTQ of a ResNet."""

import flax
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid import models
from big_vision_sid.compression import quantization as quant


def _random_variables(model, shape, seed=0):
  """Random-valued variables of the right shapes (BN stats kept plausible)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "var":
      return rng.uniform(0.5, 2.0, s.shape).astype(np.float32)
    if name == "scale":
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 10
    return (rng.normal(size=s.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, flax.core.unfreeze(shapes))


class _Fc(nn.Module):
  """One dense layer, for hand-checkable interception."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, name="fc")(x)


def test_fake_quant_is_idempotent_and_within_half_a_step():
  x = jax.random.normal(jax.random.key(0), (10_000,)) * 3
  scale = 0.02  # Range 127 * 0.02 = 2.54: some values are clipped.
  q = quant.fake_quant(x, scale)
  np.testing.assert_array_equal(quant.fake_quant(q, scale), q)
  inside = np.abs(x) <= 127 * scale
  assert 0.2 < inside.mean() < 0.9
  assert np.all(np.abs(q - x)[inside] <= scale / 2 * (1 + 1e-6))
  np.testing.assert_allclose(np.abs(q[~inside]), 127 * scale, rtol=1e-6)
  # Every value lies on the grid.
  k = np.asarray(q) / scale
  np.testing.assert_allclose(k, np.round(k), atol=1e-4)


def test_straight_through_gradient_is_one_inside_and_zero_outside():
  scale = 0.1
  x = jnp.array([-13.0, -12.7, -5.04, 0.0, 3.33, 12.7, 12.71, 40.0])
  grad = jax.grad(lambda x: jnp.sum(quant.fake_quant(x, scale) * 2.0))(x)
  np.testing.assert_allclose(grad, [0, 2, 2, 2, 2, 2, 0, 0])
  scale_grad = jax.grad(lambda s: jnp.sum(quant.fake_quant(x, s)))(scale)
  assert float(scale_grad) == 0.0


def test_other_bit_widths_and_zero_scale():
  x = jnp.array([-1.0, -0.26, 0.1, 0.9])
  np.testing.assert_allclose(quant.fake_quant(x, 0.25, 3), [-0.75, -0.25, 0.0,
                                                            0.75])
  np.testing.assert_array_equal(quant.fake_quant(x, 0.0), np.zeros(4))


def test_per_channel_scales_are_max_abs_over_each_output_channel():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
  kernel[..., 2] = 0.0  # A fully pruned channel.
  scales = quant.channel_scales(jnp.asarray(kernel))
  np.testing.assert_allclose(scales, np.abs(kernel).max(axis=(0, 1, 2)) / 127,
                             rtol=1e-6)
  q = np.asarray(quant.fake_quant_kernel(jnp.asarray(kernel)))
  np.testing.assert_array_equal(q[..., 2], 0.0)
  # Each live channel's largest weight is exactly representable.
  for c in (0, 1, 3, 4):
    i = np.unravel_index(np.abs(kernel[..., c]).argmax(), kernel.shape[:3])
    np.testing.assert_allclose(q[i + (c,)], kernel[i + (c,)], rtol=1e-6)
  dense = rng.normal(size=(6, 2)).astype(np.float32)
  np.testing.assert_allclose(quant.channel_scales(jnp.asarray(dense)),
                             np.abs(dense).max(axis=0) / 127, rtol=1e-6)
  attention = rng.normal(size=(8, 2, 4)).astype(np.float32)
  np.testing.assert_allclose(
      quant.channel_scales(jnp.asarray(attention), num_out_axes=2),
      np.abs(attention).max(axis=0) / 127, rtol=1e-6)


def test_batchnorm_folding_commutes_with_per_channel_quantisation():
  # Why the module does not fold BN: fq(w * c) == c * fq(w) per channel.
  rng = np.random.default_rng(1)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32)
  c = jnp.asarray(rng.uniform(0.1, 3.0, 16) * rng.choice([-1, 1], 16),
                  jnp.float32)
  np.testing.assert_allclose(quant.fake_quant_kernel(kernel * c),
                             c * quant.fake_quant_kernel(kernel),
                             rtol=1e-5, atol=1e-7)


def test_int8_storage_reproduces_the_fake_quantised_kernel():
  rng = np.random.default_rng(2)
  kernel = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
  torch_layout = kernel.transpose(3, 2, 0, 1)
  values, scales = quant.quantize_per_channel(torch_layout, axis=0)
  assert values.dtype == np.int8 and scales.shape == (6,)
  assert np.abs(values).max() == 127
  np.testing.assert_array_equal(
      quant.dequantize_per_channel(values, scales, axis=0),
      np.asarray(quant.fake_quant_kernel(jnp.asarray(kernel))).transpose(
          3, 2, 0, 1))
  with pytest.raises(ValueError, match="bits <= 8"):
    quant.quantize_per_channel(torch_layout, bits=16)


def test_interception_matches_a_hand_computed_dense_layer():
  model = _Fc()
  x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 5)), jnp.float32)
  variables = _random_variables(model, (1, 5))
  ranges = quant.calibrate(model, variables, [x[:2], x[2:]])
  assert list(ranges) == ["fc"]
  np.testing.assert_allclose(ranges["fc"], np.abs(x).max(), rtol=1e-6)
  got = quant.quantized_apply(model, ranges)(variables, x)
  kernel = np.asarray(variables["params"]["fc"]["kernel"])
  w_scale = np.abs(kernel).max(axis=0) / 127
  x_scale = ranges["fc"] / 127
  expected = ((np.round(x / x_scale) * x_scale)
              @ (np.round(kernel / w_scale) * w_scale)
              + variables["params"]["fc"]["bias"])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # No quantisation at all is the float model, exactly.
  np.testing.assert_array_equal(
      quant.quantized_apply(model, None, quantize_weights=False)(variables, x),
      model.apply(variables, x))


def test_calibration_percentile_of_a_single_batch_is_exact():
  model = _Fc()
  x = jnp.asarray(np.random.default_rng(4).normal(size=(64, 5)), jnp.float32)
  variables = _random_variables(model, (1, 5))
  ranges = quant.calibrate(model, variables, [x], method="percentile",
                           percentile=90.0)
  np.testing.assert_allclose(ranges["fc"], np.percentile(np.abs(x), 90.0),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="Unknown calibration method 'mse'"):
    quant.calibrate(model, variables, [x], method="mse")
  with pytest.raises(ValueError, match="at least one batch"):
    quant.calibrate(model, variables, [])


def test_attention_projections_are_intercepted():
  model = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)
  x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 3, 8)), jnp.float32)
  variables = _random_variables(model, (1, 3, 8))
  ranges = quant.calibrate(model, variables, [x])
  assert sorted(ranges) == ["key", "out", "query", "value"]
  got = quant.quantized_apply(model, ranges)(variables, x)
  want = model.apply(variables, x)
  assert 0 < np.abs(got - want).max() < 0.05 * np.abs(want).max()


@pytest.fixture(scope="module")
def resnet8():
  model = models.build_model("cifar_resnet8", 10)
  variables = _random_variables(model, (1, 32, 32, 3))
  rng = np.random.default_rng(6)
  calibration = rng.normal(size=(32, 32, 32, 3)).astype(np.float32)
  test = rng.normal(size=(64, 32, 32, 3)).astype(np.float32)
  return model, variables, calibration, test


def test_ptq_of_a_resnet8_keeps_the_logits(resnet8):
  model, variables, calibration, test = resnet8
  ranges = quant.calibrate(model, variables, [calibration[:16],
                                              calibration[16:]])
  assert len(ranges) == 8  # 7 convs + the linear layer.
  np.testing.assert_allclose(ranges["conv1"], np.abs(calibration).max(),
                             rtol=1e-6)
  float_logits = jax.jit(model.apply)(variables, test)
  int8_logits = jax.jit(quant.quantized_apply(model, ranges))(variables, test)
  error = np.linalg.norm(int8_logits - float_logits) / np.linalg.norm(
      float_logits)
  agreement = np.mean(int8_logits.argmax(-1) == float_logits.argmax(-1))
  assert 0 < error < 0.05, error
  assert agreement >= 0.9, agreement
  with pytest.raises(ValueError, match="No calibrated input range for layer"
                     " linear"):
    quant.quantized_apply(model, {k: v for k, v in ranges.items()
                                  if k != "linear"})(variables, test[:1])


def test_qat_gradients_flow_to_kernels_and_stop_outside_the_range(resnet8):
  model, variables, calibration, _ = resnet8
  ranges = quant.calibrate(model, variables, [calibration])
  ranges["conv1"] = 1.0  # Clip the input image at |x| > 1.
  apply = quant.quantized_apply(model, ranges)

  def loss(params, x):
    logits, _ = apply({**variables, "params": params}, x, train=True,
                      mutable=["batch_stats"])
    return jnp.sum(logits ** 2)

  x = calibration[:4]
  param_grads, x_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(
      variables["params"], x)
  flat = traverse_util.flatten_dict(param_grads, sep="/")
  for name, g in flat.items():
    assert np.all(np.isfinite(g)) and np.any(g != 0), name
  outside = np.abs(x) > 1.0
  assert np.all(np.asarray(x_grad)[outside] == 0)
  assert np.mean(np.asarray(x_grad)[~outside] != 0) > 0.9
