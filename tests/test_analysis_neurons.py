"""Activation maximisation (big_vision_sid/analysis/neurons.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid.analysis import common
from big_vision_sid.analysis import neurons


class _Block(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Conv(self.width, (3, 3), name="conv")(x))


class _Tiny(nn.Module):
  """Two blocks (stages 'stage1', 'stage2') and a 4-class head."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = _Block(6, name="stage1_0")(x)
    x = _Block(8, name="stage2_0")(nn.avg_pool(x, (2, 2), (2, 2)))
    return nn.Dense(4, name="head")(x.mean(axis=(1, 2)))


@pytest.fixture(name="net", scope="module")
def fixture_net() -> common.Network:
  module = _Tiny()
  # Random variables without compiling init (slow on a busy CPU).
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, 16, 16, 3)))
  variables = jax.tree.map(
      lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
  return common.Network("tiny", "tiny", module, module.apply, variables,
                        (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _colors() -> np.ndarray:
  rng = np.random.default_rng(0)
  grey = rng.uniform(size=(4000, 1))
  pixels = np.clip(grey + 0.1 * rng.normal(size=(4000, 3)), 0, 1)
  return neurons.color_decorrelation(pixels)


def test_fourier_parameterisation_round_trips():
  parameterization = neurons.FourierImage(16, 12, _colors())
  images = jax.random.uniform(jax.random.key(1), (2, 16, 12, 3),
                              minval=0.02, maxval=0.98)
  to_image = jax.jit(parameterization.to_image)
  from_image = jax.jit(parameterization.from_image)
  params = from_image(images)
  assert params.shape == (2, 3, 16, 7, 2)
  np.testing.assert_allclose(to_image(params), images, atol=2e-5)
  # And the other way for parameters of a real image's spectrum: the
  # imaginary parts of the self-conjugate bins (DC and Nyquist) carry nothing.
  again = from_image(to_image(params))
  np.testing.assert_allclose(again, params, rtol=1e-3, atol=1e-3)


def test_initial_image_is_grey_and_spectrum_falls_off():
  parameterization = neurons.FourierImage(16, 16, _colors())
  image = jax.jit(parameterization.to_image)(
      parameterization.init(jax.random.key(2), 4))
  assert image.shape == (4, 16, 16, 3)
  assert np.all(np.abs(np.asarray(image) - 0.5) < 0.1)
  scale = neurons.spectrum_scale(16, 16)
  assert scale.shape == (16, 9)
  # 1 / frequency in cycles per pixel, the DC term capped at 1 / max side.
  assert scale[0, 0] == 16 and scale[0, 1] == pytest.approx(16)
  assert scale[0, 8] == pytest.approx(2) and scale[8, 8] == pytest.approx(
      1 / np.sqrt(0.5))


def test_color_decorrelation_is_a_root_of_the_covariance():
  rng = np.random.default_rng(3)
  mix = np.array([[1.0, 0.2, 0.0], [0.9, 0.5, 0.1], [0.7, 0.3, 0.4]])
  pixels = rng.normal(size=(20000, 3)) @ mix.T
  root = neurons.color_decorrelation(pixels)
  covariance = np.cov(pixels.T)
  product = root.astype(np.float64) @ root.T
  np.testing.assert_allclose(product / product[0, 0],
                             covariance / covariance[0, 0], rtol=1e-4)
  assert np.linalg.norm(root, axis=0).max() == pytest.approx(1.0, rel=1e-6)
  # A grey image's colours are rank 1; the root stays invertible.
  grey = np.repeat(rng.uniform(size=(1000, 1)), 3, axis=1)
  assert np.isfinite(np.linalg.inv(neurons.color_decorrelation(grey))).all()


def test_random_transform_resamples_within_range():
  images = jax.random.uniform(jax.random.key(4), (3, 16, 16, 3))
  transform = jax.jit(neurons.random_transform)
  out = transform(jax.random.key(5), images)
  assert out.shape == images.shape
  # Bilinear interpolation averages neighbours: no new extremes.
  assert out.min() >= images.min() - 1e-6 and out.max() <= images.max() + 1e-6
  assert not np.allclose(out, images)
  constant = jnp.full((2, 16, 16, 3), 0.3)
  np.testing.assert_allclose(
      transform(jax.random.key(6), constant), constant,
      atol=1e-6)


def test_objectives_cover_classes_and_stage_channels(net):
  objectives = neurons.objectives_for(net, (16, 16, 3), ["a", "b", "c", "d"],
                                      num_classes=3, channels_per_stage=2,
                                      seed=0)
  assert [o.label for o in objectives[:3]] == ["a", "b", "c"]
  assert all(o.layer == common.LOGITS for o in objectives[:3])
  channels = objectives[3:]
  assert [o.layer for o in channels] == ["stage1_0"] * 2 + ["stage2_0"] * 2
  assert all(0 <= o.channel < 6 for o in channels[:2])
  assert all(0 <= o.channel < 8 for o in channels[2:])
  assert objectives == neurons.objectives_for(
      net, (16, 16, 3), ["a", "b", "c", "d"], 3, 2, seed=0)


def test_activation_maximisation_raises_its_targets(net):
  objectives = [neurons.Objective(common.LOGITS, 2, "class 2"),
                neurons.Objective("stage2_0", 5, "stage2:5")]
  parameterization = neurons.FourierImage(16, 16, _colors())
  images, history, final = neurons.maximize(net, objectives, parameterization,
                                            steps=60, seed=0)
  assert images.shape == (2, 16, 16, 3) and history.shape == (60, 2)
  assert np.all((images > 0) & (images < 1))
  start, end = history[:5].mean(axis=0), history[-5:].mean(axis=0)
  assert np.all(end > start + 0.1), history
  # On the untransformed images too, and the class image is that class's.
  initial = jax.jit(lambda p: common.capture_layers(
      net, net.variables, net.normalize(parameterization.to_image(p)),
      ["stage2_0", common.LOGITS]))(parameterization.init(
          jax.random.split(jax.random.key(0))[0], 2))
  assert final[0] > float(initial[1][0, 2]) + 0.1
  assert final[1] > float(initial[0][1, ..., 5].mean()) + 0.1
  logits = common.predict_logits(net, images, batch_size=2)
  assert logits[0].argmax() == 2
