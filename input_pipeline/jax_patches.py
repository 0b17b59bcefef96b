"""The patch renderer and the distillation augmentation in jax.numpy.

Mirrors `tf_patches` operation by operation (same parameters, same pixels up
to float rounding) so that patches can be rendered on an accelerator host
that has no TensorFlow. No TensorFlow import here.
"""

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import patch_params

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _pixel_grid(size: int) -> tuple[jax.Array, jax.Array]:
  v, u = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32),
                      jnp.arange(size, dtype=jnp.float32), indexing="ij")
  return u, v


def _apply_affine(affine, u, v):
  a = affine[:, :, :, None, None]
  return (a[:, 0, 0] * u + a[:, 0, 1] * v + a[:, 0, 2],
          a[:, 1, 0] * u + a[:, 1, 1] * v + a[:, 1, 2])


def _bilinear_taps(x, y, offset, height, width):
  """Flat atlas indices [B, P, P, 4] and weights of bilinear sampling."""
  x_floor, y_floor = jnp.floor(x), jnp.floor(y)
  ax, ay = x - x_floor, y - y_floor
  width = width[:, None, None]
  height = height[:, None, None]
  x0 = x_floor.astype(jnp.int32)
  y0 = y_floor.astype(jnp.int32)
  xs = [jnp.clip(x0 + d, 0, width - 1) for d in (0, 1)]
  ys = [jnp.clip(y0 + d, 0, height - 1) for d in (0, 1)]
  base = offset[:, None, None]
  indices = jnp.stack([base + ys[j] * width + xs[i]
                       for j in (0, 1) for i in (0, 1)], axis=-1)
  weights = jnp.stack([(1 - ay) * (1 - ax), (1 - ay) * ax,
                       ay * (1 - ax), ay * ax], axis=-1)
  return indices, weights


def _sample_pyramid(pyramid, atlas, params, size):
  u, v = _pixel_grid(size)
  src_x, src_y = _apply_affine(params["src_affine"].astype(jnp.float32), u, v)
  rrc_x, rrc_y = _apply_affine(params["rrc_affine"].astype(jnp.float32), u, v)
  big = params["rrc_size"].astype(jnp.float32)[:, None, None]
  inside = (rrc_x >= 0) & (rrc_x < big) & (rrc_y >= 0) & (rrc_y < big)

  num_levels = pyramid.num_levels
  level = jnp.clip(jnp.log(params["zoom"].astype(jnp.float32)) / jnp.log(2.0),
                   0.0, float(num_levels - 1))
  level0 = jnp.floor(level).astype(jnp.int32)
  level1 = jnp.minimum(level0 + 1, num_levels - 1)
  blend = (level - level0.astype(jnp.float32))[:, None, None, None]
  offsets = jnp.asarray(pyramid.offsets, jnp.int32)
  heights = jnp.asarray(pyramid.heights, jnp.int32)
  widths = jnp.asarray(pyramid.widths, jnp.int32)
  all_indices, all_weights = [], []
  for lvl, level_weight in ((level0, 1.0 - blend), (level1, blend)):
    inv_scale = jnp.power(2.0, -lvl.astype(jnp.float32))[:, None, None]
    x = (src_x + 0.5) * inv_scale - 0.5
    y = (src_y + 0.5) * inv_scale - 0.5
    indices, weights = _bilinear_taps(x, y, offsets[lvl], heights[lvl],
                                      widths[lvl])
    all_indices.append(indices)
    all_weights.append(weights * level_weight)
  indices = jnp.concatenate(all_indices, axis=-1)
  weights = jnp.concatenate(all_weights, axis=-1)
  pixels = jnp.sum(atlas[indices] * weights[..., None], axis=-2)
  return pixels * inside[..., None].astype(jnp.float32)


def _gray(x):
  return jnp.sum(x * jnp.asarray(_GRAY_WEIGHTS, x.dtype), axis=-1,
                 keepdims=True)


def _blend(x, other, factor):
  return jnp.clip(factor * x + (1.0 - factor) * other, 0.0, 1.0)


def _rgb_to_hsv(x):
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc = jnp.max(x, axis=-1)
  minc = jnp.min(x, axis=-1)
  delta = maxc - minc
  safe_delta = jnp.where(delta > 0, delta, 1.0)
  sat = jnp.where(maxc > 0, delta / jnp.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = [(maxc - c) / safe_delta for c in (r, g, b)]
  hue = jnp.where(r == maxc, bc - gc,
                  jnp.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  hue = jnp.where(delta > 0, jnp.mod(hue / 6.0, 1.0), 0.0)
  return hue, sat, maxc


def _hsv_to_rgb(hue, sat, val):
  # Closed form of the six-sector HSV->RGB: channel n has
  # k = (n + 6 h) mod 6 and c = v - v s clip(min(k, 4 - k), 0, 1).
  chroma = val * sat
  channels = []
  for n in (5.0, 3.0, 1.0):
    k = jnp.mod(n + 6.0 * hue, 6.0)
    channels.append(val - chroma * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))
  return jnp.stack(channels, axis=-1)


def _adjust_hue(x, shift):
  hue, sat, val = _rgb_to_hsv(x)
  return _hsv_to_rgb(jnp.mod(hue + shift[..., 0], 1.0), sat, val)


def _color_jitter(x, params):
  """torchvision ColorJitter with per-patch factors and op order."""
  factors = params["jitter_factors"].astype(jnp.float32)[:, None, None, None]
  order = params["jitter_order"].astype(jnp.int32)
  jittered = x
  for step in range(4):
    op = order[:, step][:, None, None, None]
    gray = _gray(jittered)
    mean = jnp.mean(gray, axis=(1, 2, 3), keepdims=True)
    candidates = [
        jnp.clip(jittered * factors[..., 0], 0.0, 1.0),
        _blend(jittered, mean, factors[..., 1]),
        _blend(jittered, gray, factors[..., 2]),
        _adjust_hue(jittered, factors[..., 3]),
    ]
    jittered = jnp.where(op == 0, candidates[0],
                         jnp.where(op == 1, candidates[1],
                                   jnp.where(op == 2, candidates[2],
                                             candidates[3])))
  apply = params["jitter_apply"].astype(bool)[:, None, None, None]
  return jnp.where(apply, jittered, x)


def _to_uint8(x):
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def make_jax_patch_fn(image: np.ndarray, cfg: Any, patch_size: int
                      ) -> Callable[[Mapping[str, Any]], jax.Array]:
  """A jitted renderer of patches of `image`.

  Args:
    image: uint8 [H, W, 3] source image (its pyramid goes to the device once).
    cfg: the input config (unused by the renderer itself, accepted so callers
      can pass the same config everywhere; the params carry the randomness).
    patch_size: P.

  Returns:
    fn(params) -> jnp uint8 [B, P, P, 3], params from
    `patch_params.sample_patch_params` (extra keys are ignored).
  """
  del cfg  # The geometry and jitter arrive fully sampled in the params.
  pyramid = patch_params.build_pyramid(image, patch_size)
  atlas = jnp.asarray(pyramid.atlas, jnp.float32)

  @jax.jit
  def render(atlas, params):
    pixels = _sample_pyramid(pyramid, atlas, params, patch_size)
    return _to_uint8(_color_jitter(pixels, params))

  def render_patches(params: Mapping[str, Any]) -> jax.Array:
    return render(atlas, patch_params.render_params(params))

  return render_patches


@jax.jit
def augment_patches_jax(patches: jax.Array, affine: jax.Array) -> jax.Array:
  """Distillation-time augmentation: bilinear resampling with zero fill.

  Args:
    patches: uint8 [B, P, P, 3].
    affine: [B, 2, 3] from `augment.sample_augment_affine`: output pixel
      (u, v, 1) -> input pixel index (x, y). Inputs outside the patch are 0.

  Returns:
    uint8 [B, P, P, 3].
  """
  batch, size = patches.shape[0], patches.shape[1]
  x, y = _apply_affine(affine.astype(jnp.float32), *_pixel_grid(size))
  inside = (x > -0.5) & (x < size - 0.5) & (y > -0.5) & (y < size - 0.5)
  offset = jnp.arange(batch, dtype=jnp.int32) * size * size
  sizes = jnp.full((batch,), size, jnp.int32)
  indices, weights = _bilinear_taps(x, y, offset, sizes, sizes)
  flat = patches.astype(jnp.float32).reshape(-1, 3)
  pixels = jnp.sum(flat[indices] * weights[..., None], axis=-2)
  pixels = pixels * inside[..., None].astype(jnp.float32)
  return jnp.round(pixels).astype(jnp.uint8)
