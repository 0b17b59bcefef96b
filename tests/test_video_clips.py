"""Fake clips: determinism, resume, the motion they should have, AugMix ops."""

import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageOps
import pytest

from input_pipeline import config as config_lib
from input_pipeline import train_data
from input_pipeline.randomness import Draws
from input_pipeline.image import renderer as renderer_lib
from input_pipeline.video import augment
from input_pipeline.video import clips


def _input_cfg(**video):
  cfg = config_lib.default_input_config()
  cfg.update(dict(source="video:skimage:astronaut", patch_size=16,
                  num_patches=0, batch_size=4, backend="jax",
                  num_parallel_calls=1, prefetch=1))
  cfg.video.update(dict(frames=6, frame_size=24, short_side=(16, 20)))
  cfg.video.update(video)
  return cfg


def test_clip_params_are_a_pure_function_of_seed_and_index():
  cfg = _input_cfg()
  whole = clips.sample_clip_params((512, 512), 3, np.arange(10), cfg)
  parts = [clips.sample_clip_params((512, 512), 3, np.array([i]), cfg)
           for i in (7, 2)]
  for key, value in whole.items():
    np.testing.assert_array_equal(parts[0][key][0], value[7])
    np.testing.assert_array_equal(parts[1][key][0], value[2])
  other = clips.sample_clip_params((512, 512), 4, np.arange(10), cfg)
  assert not np.array_equal(other["boxes"], whole["boxes"])
  # Both boxes lie in the initial 256 x 256 crop, which lies in the image.
  top, left, height, width = np.moveaxis(whole["boxes"], -1, 0)
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + height <= 256).all() and (left + width <= 256).all()
  assert (whole["crop_xy"] >= 0).all() and (whole["crop_xy"] <= 256).all()


def test_batches_are_deterministic_resume_exactly_and_shard_by_host():
  cfg = _input_cfg()
  run = train_data.make_train_iterator(cfg, seed=0)
  batches = [next(run)["image"] for _ in range(3)]
  assert batches[0].shape == (4, 4, 16, 16, 3)
  assert batches[0].dtype == np.uint8
  assert not np.array_equal(batches[1], batches[2])
  resumed = next(train_data.make_train_iterator(cfg, seed=0, start_step=2))
  np.testing.assert_array_equal(resumed["image"], batches[2])
  hosts = [next(train_data.make_train_iterator(
      cfg, seed=0, start_step=1, process_index=h, process_count=2))["image"]
           for h in (0, 1)]
  np.testing.assert_array_equal(np.concatenate(hosts), batches[1])
  other_seed = next(train_data.make_train_iterator(cfg, seed=1))["image"]
  assert not np.array_equal(other_seed, batches[0])


def _ramp_image(size=256):
  """R = x, G = y (pixel indices), B = 128: a source with known content."""
  y, x = np.mgrid[0:size, 0:size]
  return np.stack([x, y, np.full_like(x, 128)], -1).astype(np.uint8)


def _hand_params(boxes):
  return {
      "crop_xy": np.array([[0, 0]]),
      "boxes": np.asarray([boxes], np.float64),
      "jitter_apply": np.array([False]),
      "jitter_factors": np.ones((1, 4)),
      "jitter_order": np.arange(4)[None],
  }


def test_frames_pan_and_zoom_linearly_between_the_two_boxes():
  # Boxes (top, left, height, width) chosen by hand; 5 frames of 32 px.
  params = _hand_params([[40, 20, 64, 64], [100, 150, 96, 96]])
  renderer = renderer_lib.make_renderer("jax", _ramp_image(), 32)
  frames = np.arange(5)[None]
  out = renderer.render_numpy(clips.render_params(
      params, frames, 5, clips.identity_view(1, 32), 32))
  u = np.arange(32)
  for f in range(5):
    t = f / 4
    top, left = 40 + t * 60, 20 + t * 130
    side = 64 + t * 32
    # Pixel u of a 32-px frame of the box shows source x = left +
    # (u + 0.5) side / 32 - 0.5 (pixel centres), here R = x, G = y.
    expected = left + (u + 0.5) * side / 32 - 0.5
    np.testing.assert_allclose(out[f, 16, :, 0], expected, atol=0.6)
    np.testing.assert_allclose(out[f, :, 16, 1], top + (u + 0.5) * side / 32
                               - 0.5, atol=0.6)
  # Frame 2 by hand: t = 1/2, box (70, 85, 80, 80): x(0) = 85 + 1.25 - 0.5.
  assert abs(int(out[2, 0, 0, 0]) - 85.75) <= 0.6


def test_a_view_scales_crops_and_flips_the_frame():
  params = _hand_params([[40, 20, 64, 64], [40, 20, 64, 64]])
  renderer = renderer_lib.make_renderer("jax", _ramp_image(), 16)
  view = clips.View(side=np.array([40.0]), x=np.array([10.0]),
                    y=np.array([5.0]), flip=np.array([True]))
  out = renderer.render_numpy(clips.render_params(
      params, np.zeros((1, 1), np.int64), 2, view, 16))
  u = np.arange(16)
  # The 64-px box scaled to 40 px: its pixel x' shows source 20 + (x' + 0.5)
  # 64 / 40 - 0.5; the crop starts at x' = 10, mirrored: x' = 10 + 15 - u.
  expected_x = 20 + (10 + 15 - u + 0.5) * 1.6 - 0.5
  np.testing.assert_allclose(out[0, 8, :, 0], expected_x, atol=0.6)
  np.testing.assert_allclose(out[0, :, 8, 1], 40 + (5 + u + 0.5) * 1.6 - 0.5,
                             atol=0.6)


def test_views_sample_consecutive_frames_inside_the_clip():
  video = _input_cfg(frames=8, frame_stride=2, clip_frames=3).video
  frames, view = augment.sample_views(0, np.arange(2000), video, out=16)
  assert frames.shape == (2000, 3)
  np.testing.assert_array_equal(np.diff(frames, axis=1), 2)
  assert frames.min() == 0 and frames.max() == 7
  assert set(np.unique(view.side)) == set(range(16, 21))
  assert (view.x >= 0).all() and (view.x + 16 <= view.side).all()
  assert 0.45 < view.flip.mean() < 0.55
  no_flip = _input_cfg(hflip=False).video
  assert not augment.sample_views(0, np.arange(50), no_flip, 16)[1].flip.any()
  with pytest.raises(ValueError, match="spans 9 frames"):
    augment.sample_views(0, np.arange(2), _input_cfg(
        frames=8, frame_stride=4, clip_frames=3).video, 16)


# --- AugMix. ---


def _clip(seed=0, frames=2, size=12):
  return np.random.default_rng(seed).integers(
      0, 256, (frames, size, size, 3), dtype=np.uint8)


def test_point_ops_match_hand_values():
  x = np.array([[[[0b10110111, 200, 100]]]], np.uint8)
  np.testing.assert_array_equal(augment._posterize(x, 4),
                                [[[[0b10110000, 192, 96]]]])
  # Solarize at factor 0.7: threshold int(178.5) = 178; 200 -> 55.
  np.testing.assert_array_equal(augment._solarize(x, 0.7),
                                [[[[255 - 0b10110111, 55, 100]]]])
  np.testing.assert_array_equal(augment._brightness(x, 0.5),
                                [[[[91, 100, 50]]]])
  ramp = np.array([10, 27, 95], np.uint8).reshape(1, 3, 1, 1).repeat(3, -1)
  # Autocontrast stretches [10, 95] to [0, 255]: (27 - 10) * 3 = 51.
  np.testing.assert_array_equal(augment._autocontrast(ramp, 0.0)[0, :, 0, 0],
                                [0, 51, 255])


def test_equalize_matches_pil_per_frame_and_channel():
  clip = (_clip(1, frames=3, size=16) // 4).astype(np.uint8)  # 64 levels.
  out = augment._equalize(clip, 0.0)
  for t in range(3):
    expected = np.asarray(ImageOps.equalize(Image.fromarray(clip[t])))
    np.testing.assert_array_equal(out[t], expected)


def test_geometric_ops_move_pixels_where_expected():
  clip = _clip(2, size=10)
  moved = augment._translate(clip, 3.0, 0.0)
  np.testing.assert_array_equal(moved[:, :, :7], clip[:, :, 3:])
  assert (moved[:, :, 7:] == 0).all()  # Fill 0.5 of a grey level rounds to 0.
  # 90 degrees counter-clockwise about the centre is np.rot90.
  np.testing.assert_array_equal(augment._rotate(clip, 90.0),
                                np.rot90(clip, 1, axes=(1, 2)))
  sheared = augment._shear_x(clip, 1.0)  # x_in = u + (v + 0.5): half-pixel.
  np.testing.assert_array_equal(
      sheared[:, 0, :9],
      np.round(0.5 * clip[:, 0, :9].astype(float) + 0.5 * clip[:, 0, 1:])
      .astype(np.uint8))


def test_augmix_applies_the_same_ops_to_every_frame():
  video = _input_cfg().video
  frame = _clip(3, frames=1, size=16)
  clip = np.repeat(frame, 4, axis=0)
  for position in range(8):
    out = augment.augmix(clip, 0, position, video)
    assert out.shape == clip.shape and out.dtype == np.uint8
    for t in range(1, 4):
      np.testing.assert_array_equal(out[t], out[0])
  a = augment.augmix(clip, 0, 5, video)
  np.testing.assert_array_equal(a, augment.augmix(clip, 0, 5, video))
  assert not all(np.array_equal(a, augment.augmix(clip, 0, q, video))
                 for q in range(6, 10))


def test_augmix_plan_follows_pytorchvideo_defaults():
  video = _input_cfg().video
  plans = [augment.augmix_plan(Draws(0, q, 531), video) for q in range(400)]
  for weights, m, chains in plans:
    assert len(weights) == 3 and abs(weights.sum() - 1) < 1e-9
    assert 0 < m < 1
    assert all(1 <= len(ops) <= 3 for ops in chains)
    assert all(0.1 <= level <= 3.0 and name in augment.AUGMIX_OPS
               for ops in chains for name, level, _ in ops)
  # alpha = 1: m ~ Beta(1, 1) = U(0, 1); depths uniform over 1..3.
  assert abs(np.mean([m for _, m, _ in plans]) - 0.5) < 0.05
  depths = np.bincount([len(ops) for _, _, chains in plans for ops in chains])
  assert (np.abs(depths[1:] / depths.sum() - 1 / 3) < 0.06).all()
  fixed = ml_collections.ConfigDict(dict(video.to_dict(), augmix_depth=2,
                                         augmix_alpha=0.5))
  _, m, chains = augment.augmix_plan(Draws(0, 1, 531), fixed)
  assert all(len(ops) == 2 for ops in chains) and 0 < m < 1


def test_cutmix_of_clips_boxes_height_and_width_in_every_frame():
  import jax  # pylint: disable=g-import-not-at-top
  from big_vision_sid import mixing  # pylint: disable=g-import-not-at-top
  clips_in = np.random.default_rng(0).random((3, 4, 8, 10, 3)).astype(
      np.float32)
  for seed in range(20):
    key = jax.random.key(seed)
    out = np.asarray(mixing.mix_images(key, clips_in, "cutmix", 1.0))
    box = mixing.sample_cutmix_box(key, 8, 10, 1.0)
    inside = np.zeros((8, 10), bool)
    inside[int(box.top):int(box.bottom), int(box.left):int(box.right)] = True
    partners = np.roll(clips_in, 1, axis=0)
    # The same height x width box in all 4 frames, every channel.
    np.testing.assert_array_equal(out[:, :, inside], partners[:, :, inside])
    np.testing.assert_array_equal(out[:, :, ~inside], clips_in[:, :, ~inside])


def test_preview_writes_an_animated_gif_and_a_frame_strip(tmp_path):
  from input_pipeline.video import show  # pylint: disable=g-import-not-at-top
  cfg = _input_cfg(frames=3)
  shown = show.fake_clips(cfg, 0, np.arange(2), size=16)
  assert shown.shape == (2, 3, 16, 16, 3)
  assert not np.array_equal(shown[:, 0], shown[:, 2])  # The clips move.
  show.write_clips(shown, str(tmp_path / "clips.gif"))
  with Image.open(tmp_path / "clips.gif") as gif:
    assert (gif.n_frames, gif.size) == (3, (2 * 16 + 2, 16))
  show.write_clips(shown, str(tmp_path / "clips.png"))
  with Image.open(tmp_path / "clips.png") as strip:
    assert strip.size == (3 * 16 + 2 * 2, 2 * 16 + 2)
    np.testing.assert_array_equal(np.asarray(strip)[18:34, 18:34],
                                  shown[1, 1])
