"""Batched TensorFlow renderer of patches (mip-mapped sampling + colour jitter).

Same math as `jax_patches`; see `patch_params` for the parameter layout.
Each output pixel maps through one affine to the source image, is sampled
trilinearly from the two mip levels around log2(zoom) (antialiasing like a
filtered resize at O(P^2) cost per patch, whatever the crop size) and set to 0
where RandomAffine would fill. Everything is vectorised over the batch.
"""

import dataclasses
from typing import Mapping

import tensorflow as tf

from input_pipeline import patch_params

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def to_tf_pyramid(pyramid: patch_params.Pyramid) -> patch_params.Pyramid:
  """The pyramid with its atlas as a tf constant (convert once, reuse)."""
  return dataclasses.replace(pyramid,
                             atlas=tf.constant(pyramid.atlas, tf.float32))


def _pixel_grid(size: int) -> tuple[tf.Tensor, tf.Tensor]:
  v, u = tf.meshgrid(tf.range(size, dtype=tf.float32),
                     tf.range(size, dtype=tf.float32), indexing="ij")
  return u, v


def _apply_affine(affine: tf.Tensor, u: tf.Tensor,
                  v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """affine [B, 2, 3], grid [P, P] -> x, y [B, P, P]."""
  a = affine[:, :, :, None, None]
  return (a[:, 0, 0] * u + a[:, 0, 1] * v + a[:, 0, 2],
          a[:, 1, 0] * u + a[:, 1, 1] * v + a[:, 1, 2])


def _bilinear_taps(x, y, offset, height, width):
  """Flat atlas indices [B, P, P, 4] and weights of bilinear sampling."""
  x_floor, y_floor = tf.floor(x), tf.floor(y)
  ax, ay = x - x_floor, y - y_floor
  width_i = tf.cast(width, tf.int32)[:, None, None]
  height_i = tf.cast(height, tf.int32)[:, None, None]
  x0 = tf.cast(x_floor, tf.int32)
  y0 = tf.cast(y_floor, tf.int32)
  xs = [tf.clip_by_value(x0 + d, 0, width_i - 1) for d in (0, 1)]
  ys = [tf.clip_by_value(y0 + d, 0, height_i - 1) for d in (0, 1)]
  base = tf.cast(offset, tf.int32)[:, None, None]
  indices = tf.stack([base + ys[j] * width_i + xs[i]
                      for j in (0, 1) for i in (0, 1)], axis=-1)
  weights = tf.stack([(1 - ay) * (1 - ax), (1 - ay) * ax,
                      ay * (1 - ax), ay * ax], axis=-1)
  return indices, weights


def _sample_pyramid(pyramid, params, size):
  """Trilinear mip samples [B, P, P, 3] (float, [0, 1], 0 where filled)."""
  u, v = _pixel_grid(size)
  src_x, src_y = _apply_affine(
      tf.cast(params["src_affine"], tf.float32), u, v)
  rrc_x, rrc_y = _apply_affine(
      tf.cast(params["rrc_affine"], tf.float32), u, v)
  big = tf.cast(params["rrc_size"], tf.float32)[:, None, None]
  inside = (rrc_x >= 0) & (rrc_x < big) & (rrc_y >= 0) & (rrc_y < big)

  num_levels = pyramid.num_levels
  level = tf.clip_by_value(
      tf.math.log(tf.cast(params["zoom"], tf.float32)) / tf.math.log(2.0),
      0.0, float(num_levels - 1))
  level0 = tf.cast(tf.floor(level), tf.int32)
  level1 = tf.minimum(level0 + 1, num_levels - 1)
  blend = (level - tf.cast(level0, tf.float32))[:, None, None, None]
  offsets = tf.constant(pyramid.offsets, tf.int64)
  heights = tf.constant(pyramid.heights, tf.int32)
  widths = tf.constant(pyramid.widths, tf.int32)
  all_indices, all_weights = [], []
  for lvl, level_weight in ((level0, 1.0 - blend), (level1, blend)):
    inv_scale = tf.pow(2.0, -tf.cast(lvl, tf.float32))[:, None, None]
    x = (src_x + 0.5) * inv_scale - 0.5
    y = (src_y + 0.5) * inv_scale - 0.5
    indices, weights = _bilinear_taps(
        x, y, tf.gather(offsets, lvl), tf.gather(heights, lvl),
        tf.gather(widths, lvl))
    all_indices.append(indices)
    all_weights.append(weights * level_weight)
  indices = tf.concat(all_indices, axis=-1)
  weights = tf.concat(all_weights, axis=-1)
  taps = tf.gather(tf.convert_to_tensor(pyramid.atlas, tf.float32), indices)
  pixels = tf.reduce_sum(taps * weights[..., None], axis=-2)
  return pixels * tf.cast(inside, tf.float32)[..., None]


def _gray(x: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(x * tf.constant(_GRAY_WEIGHTS, x.dtype), axis=-1,
                       keepdims=True)


def _blend(x, other, factor):
  return tf.clip_by_value(factor * x + (1.0 - factor) * other, 0.0, 1.0)


def _rgb_to_hsv(x):
  r, g, b = tf.unstack(x, axis=-1)
  maxc = tf.reduce_max(x, axis=-1)
  minc = tf.reduce_min(x, axis=-1)
  delta = maxc - minc
  safe_delta = tf.where(delta > 0, delta, 1.0)
  sat = tf.where(maxc > 0, delta / tf.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = [(maxc - c) / safe_delta for c in (r, g, b)]
  hue = tf.where(r == maxc, bc - gc,
                 tf.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  hue = tf.where(delta > 0, tf.math.floormod(hue / 6.0, 1.0), 0.0)
  return hue, sat, maxc


def _hsv_to_rgb(hue, sat, val):
  # Closed form of the six-sector HSV->RGB: channel n has
  # k = (n + 6 h) mod 6 and c = v - v s clip(min(k, 4 - k), 0, 1).
  chroma = val * sat
  channels = []
  for n in (5.0, 3.0, 1.0):
    k = tf.math.floormod(n + 6.0 * hue, 6.0)
    channels.append(val - chroma * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0))
  return tf.stack(channels, axis=-1)


def _adjust_hue(x, shift):
  hue, sat, val = _rgb_to_hsv(x)
  return _hsv_to_rgb(tf.math.floormod(hue + shift[..., 0], 1.0), sat, val)


def _color_jitter(x, params):
  """torchvision ColorJitter with per-patch factors, op order and apply flag.

  Hue (the costly op) is computed only on the rows that apply it at a step,
  and nothing on the rows that skip jitter: about 1/8 of the naive work.
  """
  rows = tf.where(tf.cast(params["jitter_apply"], tf.bool))
  factors = tf.gather_nd(
      tf.cast(params["jitter_factors"], tf.float32), rows)[:, None, None, None]
  order = tf.gather_nd(tf.cast(params["jitter_order"], tf.int32), rows)
  jittered = tf.gather_nd(x, rows)
  for step in range(4):
    op = order[:, step][:, None, None, None]
    gray = _gray(jittered)
    mean = tf.reduce_mean(gray, axis=(1, 2, 3), keepdims=True)
    jittered = tf.where(
        op == 0, tf.clip_by_value(jittered * factors[..., 0], 0.0, 1.0),
        tf.where(op == 1, _blend(jittered, mean, factors[..., 1]),
                 tf.where(op == 2, _blend(jittered, gray, factors[..., 2]),
                          jittered)))
    hue_rows = tf.where(order[:, step] == 3)
    hued = _adjust_hue(tf.gather_nd(jittered, hue_rows),
                       tf.gather_nd(factors[..., 3], hue_rows))
    jittered = tf.tensor_scatter_nd_update(jittered, hue_rows, hued)
  return tf.tensor_scatter_nd_update(x, rows, jittered)


def to_uint8(x: tf.Tensor) -> tf.Tensor:
  """[0, 1] floats -> uint8 with rounding."""
  return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)


def render_patches_tf(pyramid: patch_params.Pyramid,
                      params: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """Renders a batch of patches.

  Args:
    pyramid: from `patch_params.build_pyramid` (ideally `to_tf_pyramid`'d).
    params: rows of `patch_params.sample_patch_params` (numpy or tensors).

  Returns:
    uint8 tf.Tensor [B, P, P, 3] with P = pyramid.patch_size.
  """
  pixels = _sample_pyramid(pyramid, params, pyramid.patch_size)
  return to_uint8(_color_jitter(pixels, params))


def augment_patches_tf(patches: tf.Tensor, affine: tf.Tensor) -> tf.Tensor:
  """Distillation-time augmentation: bilinear resampling with zero fill.

  Args:
    patches: uint8 [B, P, P, 3].
    affine: [B, 2, 3] from `augment.sample_augment_affine`: output pixel
      (u, v, 1) -> input pixel index (x, y). Inputs outside the patch are 0.

  Returns:
    uint8 [B, P, P, 3].
  """
  size = patches.shape[1]
  x, y = _apply_affine(tf.cast(affine, tf.float32), *_pixel_grid(size))
  inside = (x > -0.5) & (x < size - 0.5) & (y > -0.5) & (y < size - 0.5)
  batch = tf.shape(patches)[0]
  offset = tf.range(batch) * size * size
  sizes = tf.fill([batch], size)
  indices, weights = _bilinear_taps(x, y, offset, sizes, sizes)
  flat = tf.reshape(tf.cast(patches, tf.float32), [-1, 3])
  pixels = tf.reduce_sum(tf.gather(flat, indices) * weights[..., None], -2)
  pixels = pixels * tf.cast(inside, tf.float32)[..., None]
  return tf.cast(tf.round(pixels), tf.uint8)
