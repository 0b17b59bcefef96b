"""The audio CNN: hand-counted parameters, its exact block algebra, MixUp."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid import mixing
from big_vision_sid import models
from big_vision_sid.models import audio_cnn
from input_pipeline.audio import frontend


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _hand_count(widths, num_classes, kernel=4):
  """Per block (c_in -> w): time k*c_in*w + freq k*c_in*w + 1x1 2w*w + norm 2w."""
  total, c_in = 0, 1
  for w in widths:
    total += 2 * kernel * c_in * w + 2 * w * w + 2 * w
    c_in = w
  return total + c_in * num_classes + num_classes


def test_parameter_count_matches_the_hand_count():
  # 1,392 + 8,256 + 24,704 + 98,560 + dense 1,290.
  assert _hand_count((24, 32, 64, 128), 10) == 134_202
  for name, widths in (("audio_cnn", (24, 32, 64, 128)),
                       ("audio_cnn_x2", (48, 64, 128, 256))):
    model = models.build_model(name, 10)
    variables = jax.eval_shape(model.init, jax.random.key(0),
                               jnp.zeros((1, 16000, 1)))
    assert set(variables) == {"params"}
    assert _count(variables) == _hand_count(widths, 10)
  params = jax.eval_shape(models.build_model("audio_cnn", 10).init,
                          jax.random.key(0), jnp.zeros((1, 16000, 1)))["params"]
  assert params["block2"]["time"].shape == (4, 1, 24, 32)
  assert params["block2"]["freq"].shape == (1, 4, 24, 32)
  assert params["block2"]["mix"].shape == (1, 1, 64, 32)


@pytest.fixture(name="cnn", scope="module")
def fixture_cnn():
  """The audio CNN and its variables for quarter-second clips (any length
  works; short ones keep compilation and the tests fast)."""
  model = models.build_model("audio_cnn", 10)
  x = jax.random.normal(jax.random.key(1), (2, 4000, 1)) * 0.1
  return model, jax.jit(model.init)(jax.random.key(0), x), x


def test_variables_do_not_depend_on_the_input_shape(cnn):
  model, variables, x = cnn
  shapes = lambda x: jax.tree.map(lambda a: a.shape, jax.eval_shape(
      model.init, jax.random.key(0), x))
  # The trainer's and teacher loader's image-shaped dummy input.
  assert shapes(jnp.zeros((1, 16000, 1))) == shapes(jnp.zeros((1, 32, 32, 3)))
  assert shapes(x) == jax.tree.map(lambda a: a.shape, variables)
  both = jax.jit(lambda v: (model.apply(v, x), model.apply(v, x[:, :, 0])))
  logits, flat = both(variables)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  np.testing.assert_allclose(flat, logits, rtol=1e-5, atol=1e-5)


def _paper_block(x, params, group_size=8):
  """The block as written: concat(time conv, freq conv) -> 1x1 -> GN -> ReLU."""
  conv = lambda h, k: jax.lax.conv_general_dilated(
      h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = jnp.concatenate([conv(x, params["time"]), conv(x, params["freq"])], -1)
  y = conv(y, params["mix"])
  norm = nn.GroupNorm(num_groups=None, group_size=group_size)
  return nn.relu(norm.apply({"params": params["norm"]}, y))


def test_composed_kernels_equal_the_concatenated_block():
  block = audio_cnn.TimeFrequencyBlock(32, 4, 8, jnp.float32)
  x = jax.random.normal(jax.random.key(2), (2, 20, 16, 24))
  variables = jax.eval_shape(block.init, jax.random.key(3), x)
  variables = jax.tree.map(
      lambda leaf: jax.random.normal(jax.random.key(leaf.size), leaf.shape),
      variables)
  ours, paper = jax.jit(lambda v: (block.apply(v, x),
                                   _paper_block(x, v["params"])))(variables)
  np.testing.assert_allclose(ours, paper, rtol=1e-4, atol=1e-4)


def test_max_pool_2x2_equals_flax_same_pooling_and_its_gradient():
  x = jax.random.normal(jax.random.key(4), (2, 101, 63, 3))
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
  weights = jax.random.normal(jax.random.key(5), (2, 51, 32, 3))

  @jax.jit
  def compare(x):
    grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * weights))(x)
    return (audio_cnn.max_pool_2x2(x), flax_pool(x),
            grad(audio_cnn.max_pool_2x2), grad(flax_pool))
  ours, theirs, our_grad, their_grad = compare(x)
  np.testing.assert_array_equal(ours, theirs)
  np.testing.assert_allclose(our_grad, their_grad, atol=1e-6)


def test_dropout_needs_an_rng_in_training_only(cnn):
  model, variables, x = cnn
  with pytest.raises(Exception, match="dropout"):
    jax.eval_shape(lambda v: model.apply(v, x, train=True), variables)
  train = jax.jit(lambda v, key: model.apply(v, x, train=True,
                                             rngs={"dropout": key}))
  a, b = train(variables, jax.random.key(1)), train(variables, jax.random.key(2))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, train(variables, jax.random.key(1)))


@pytest.mark.parametrize("spectrogram", [True, False])
def test_mixup_of_spectrograms_and_waveforms_is_a_convex_combination(
    spectrogram):
  waveforms = jax.random.normal(jax.random.key(8), (4, 16000)) * 0.1
  rng = jax.random.key(7)

  @jax.jit
  def mixed_and_inputs(waveforms):
    # Spectrograms [B, frames, mels, 1] or the step's waveforms [B, T, 1].
    x = (frontend.log_mel(waveforms) if spectrogram else waveforms)[..., None]
    return mixing.mix_images(rng, x, "mixup", 1.0, "roll"), x
  mixed, x = mixed_and_inputs(waveforms)
  assert x.shape == ((4, 101, 64, 1) if spectrogram else (4, 16000, 1))
  lam = float(jax.random.beta(rng, 1.0, 1.0))
  np.testing.assert_allclose(mixed, lam * x + (1 - lam) * jnp.roll(x, 1, 0),
                             rtol=1e-5, atol=1e-5)
  assert 0 < lam < 1 and not np.allclose(mixed, x)
