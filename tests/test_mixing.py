"""Tests for big_vision_sid.mixing (CutMix / MixUp inside jit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid import mixing

B, H, W, C = 4, 12, 16, 3

# Eager lax.cond / random.beta dispatch op by op and are slow; jit once per
# (mode, alpha).
_mix = jax.jit(mixing.mix_images, static_argnums=(2, 3))


def _images(dtype=jnp.float32):
  # Image b lies in [b, b + 0.5), so every pixel of x differs from roll(x).
  rng = np.random.default_rng(0)
  values = np.arange(B)[:, None, None, None] + 0.5 * rng.random((B, H, W, C))
  return jnp.asarray(values, dtype)


def _is_cutmix_output(out, images):
  rolled = np.roll(images, 1, axis=0)
  return bool(np.all((out == images) | (out == rolled)))


def test_none_is_identity():
  images = _images()
  out = mixing.mix_images(jax.random.key(0), images, "none", 1.0)
  np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("mode", ["cutmix", "mixup", "cutmix_or_mixup"])
def test_deterministic_for_fixed_key(mode):
  images = _images()
  first = _mix(jax.random.key(3), images, mode, 1.0)
  second = _mix(jax.random.key(3), images, mode, 1.0)
  np.testing.assert_array_equal(first, second)
  assert first.shape == images.shape and first.dtype == images.dtype


def test_cutmix_pastes_the_sampled_box_from_rolled_batch():
  images = np.asarray(_images())
  rolled = np.roll(images, 1, axis=0)
  unclipped_seen = 0
  for seed in range(20):
    key = jax.random.key(seed)
    out = np.asarray(_mix(key, jnp.asarray(images), "cutmix", 1.0))
    assert _is_cutmix_output(out, images)
    box = mixing.sample_cutmix_box(key, H, W, 1.0)
    top, bottom, left, right = (int(v) for v in box[1:])
    expected_mask = np.zeros((H, W), bool)
    expected_mask[top:bottom, left:right] = True
    # The pasted pixels are exactly the box, identically in every image.
    pasted = np.all(out == rolled, axis=-1)
    np.testing.assert_array_equal(pasted, np.broadcast_to(expected_mask,
                                                          (B, H, W)))
    np.testing.assert_allclose(
        pasted.mean(), (bottom - top) * (right - left) / (H * W))
    # Away from the image border the box area is (1 - lam) H W up to the
    # rounding of each edge to whole pixels.
    if 0 < top and bottom < H and 0 < left and right < W:
      unclipped_seen += 1
      side = np.sqrt(1.0 - float(box.lam))
      assert abs((bottom - top) - H * side) <= 1.0
      assert abs((right - left) - W * side) <= 1.0
  assert unclipped_seen > 0


def test_mixup_is_the_sampled_convex_combination():
  images = _images()
  key = jax.random.key(5)
  out = np.asarray(mixing.mix_images(key, images, "mixup", 0.4))
  lam = float(jax.random.beta(key, 0.4, 0.4))
  expected = lam * np.asarray(images) + (1 - lam) * np.roll(images, 1, axis=0)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  assert 0.0 <= lam <= 1.0


def test_cutmix_or_mixup_uses_both():
  images = np.asarray(_images())
  rolled = np.roll(images, 1, axis=0)
  kinds = set()
  for seed in range(16):
    out = np.asarray(_mix(jax.random.key(seed), jnp.asarray(images),
                          "cutmix_or_mixup", 1.0))
    if _is_cutmix_output(out, images):
      kinds.add("cutmix")
    else:
      # A MixUp output solves out - roll = lam (x - roll) with one lam.
      lam = (out - rolled) / (images - rolled)
      np.testing.assert_allclose(lam, lam.flat[0], atol=1e-5)
      kinds.add("mixup")
  assert kinds == {"cutmix", "mixup"}


@pytest.mark.parametrize("mode", ["none", "cutmix", "mixup", "cutmix_or_mixup"])
def test_jit_traces_once(mode):
  traces = []

  @jax.jit
  def step(key, images):
    traces.append(1)
    return mixing.mix_images(key, images, mode, 1.0)

  images = _images()
  outputs = [step(jax.random.key(seed), images) for seed in range(3)]
  assert len(traces) == 1
  np.testing.assert_allclose(
      outputs[1], _mix(jax.random.key(1), images, mode, 1.0), rtol=1e-6)


def test_bf16_dtype_preserved():
  images = _images(jnp.bfloat16)
  for mode in ("cutmix", "mixup"):
    out = mixing.mix_images(jax.random.key(0), images, mode, 1.0)
    assert out.dtype == jnp.bfloat16


def test_errors():
  with pytest.raises(KeyError, match="Unknown mixing 'cutmixx'.*cutmix"):
    mixing.mix_images(jax.random.key(0), _images(), "cutmixx", 1.0)
  with pytest.raises(ValueError, match="alpha > 0"):
    mixing.mix_images(jax.random.key(0), _images(), "mixup", 0.0)
  with pytest.raises(ValueError, match=r"\[B, H, W, ...\].*\(12, 16\)"):
    mixing.mix_images(jax.random.key(0), _images()[0, :, :, 0], "cutmix", 1.0)
  with pytest.raises(KeyError, match="Unknown mixing partner 'shuffle'"):
    mixing.mix_images(jax.random.key(0), _images(), "cutmix", 1.0, "shuffle")


@pytest.mark.parametrize("partner", ["roll", "reverse", "permutation"])
def test_partners_pair_each_example_with_another_of_the_batch(partner):
  # Rows are constant images 0..B-1: MixUp with lam = 0 would show the
  # partner; recover each row's partner from a CutMix box instead.
  batch = 6
  images = jnp.broadcast_to(
      jnp.arange(batch, dtype=jnp.float32)[:, None, None, None], (batch, 8, 8, 1))
  key = jax.random.key(3)
  out = np.asarray(mixing.mix_images(key, images, "mixup", 1.0, partner))
  lam = float(jax.random.beta(key, 1.0, 1.0))
  partners = (out[:, 0, 0, 0] - lam * np.arange(batch)) / (1 - lam)
  partners = np.round(partners).astype(int)
  expected = {"roll": np.roll(np.arange(batch), 1),
              "reverse": np.arange(batch)[::-1]}.get(partner)
  if expected is not None:
    np.testing.assert_array_equal(partners, expected)
  else:  # A permutation: every example is somebody's partner exactly once.
    assert sorted(partners) == list(range(batch))
    again = np.asarray(mixing.mix_images(key, images, "mixup", 1.0, partner))
    np.testing.assert_array_equal(out, again)


def test_cutmix_on_inputs_without_a_channel_axis_and_with_two():
  # Spectrograms [B, T, F]: the box spans axes 1, 2; clips [B, T, H, W, C]:
  # it spans H and W (axes 2, 3) in every frame.
  key = jax.random.key(5)
  spectrograms = jnp.broadcast_to(
      jnp.arange(4, dtype=jnp.float32)[:, None, None], (4, 16, 12))
  out = np.asarray(mixing.mix_images(key, spectrograms, "cutmix", 1.0))
  box = mixing.sample_cutmix_box(key, 16, 12, 1.0)
  inside = np.asarray(mixing.box_mask(box, 16, 12))
  assert 0 < inside.sum() < inside.size  # A box that shows both sides.
  np.testing.assert_array_equal(out[:, inside], np.roll(np.arange(4), 1)[:, None]
                                * np.ones((1, inside.sum())))
  np.testing.assert_array_equal(out[:, ~inside], np.arange(4)[:, None]
                                * np.ones((1, (~inside).sum())))
  clips = jnp.broadcast_to(spectrograms[:, None, ..., None], (4, 3, 16, 12, 2))
  np.testing.assert_array_equal(
      np.asarray(mixing.mix_images(key, clips, "cutmix", 1.0)),
      np.broadcast_to(out[:, None, ..., None], (4, 3, 16, 12, 2)))
