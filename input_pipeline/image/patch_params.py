"""Random parameters of the paper's patch chain, one row per patch index.

The chain (Asano & Saeed, ICLR 2023, App. C.1) is
  RandomCrop(initcrop * min(H, W)) -> RandomResizedCrop(R = floor(sqrt(2) P))
  -> RandomAffine(degrees, x-shear; bilinear, fill 0) -> [vertical flip]
  -> CenterCrop(P) -> ColorJitter applied with probability p.

Every random number is a counter-based hash of (seed, index, stream, counter),
so patch i is a pure function of (image size, seed, i): any subset of indices
can be generated in any batching, on any host, and gives the same rows.

The geometry is composed into one affine map per patch from output pixel
indices (u, v, 1) to source-image pixel indices (pixel centres at integers),
plus the map to the R x R RandomResizedCrop image (continuous coordinates,
pixel centres at k + 0.5), which tells where RandomAffine fills zeros.

numpy only: this module runs on accelerator hosts without TensorFlow.
"""

import dataclasses
from typing import Any

import numpy as np

from input_pipeline.randomness import hash_uniform

# Stream ids of the hash, one per random quantity.
_CROP_X, _CROP_Y = 1, 2
_RRC_AREA, _RRC_RATIO, _RRC_X, _RRC_Y = 3, 4, 5, 6
_ANGLE, _SHEAR, _VFLIP = 7, 8, 9
_JITTER_APPLY = 10
_JITTER_FACTOR = (11, 12, 13, 14)  # brightness, contrast, saturation, hue
_JITTER_ORDER = 15
# Beyond this many RandomResizedCrop attempts the config cannot be satisfied.
_MAX_RRC_ATTEMPTS = 1000

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
# The params the renderers read; the others are for inspection and tests.
RENDER_KEYS = ("src_affine", "rrc_affine", "rrc_size", "zoom", "jitter_apply",
               "jitter_factors", "jitter_order")

def _randint(u: np.ndarray, low, high) -> np.ndarray:
  """Integers uniform in [low, high] (inclusive) from uniforms `u`."""
  span = np.asarray(high) - np.asarray(low) + 1
  return np.asarray(low) + np.minimum(np.floor(u * span), span - 1).astype(
      np.int64)


def rrc_size(patch_size: int) -> int:
  """Side R of the RandomResizedCrop image: floor(sqrt(2) P), so any rotation
  of the P x P centre crop stays inside it."""
  return int(np.floor(np.sqrt(2.0) * patch_size))


def initial_crop_size(image_hw: tuple[int, int], initcrop: float) -> int:
  """Side of the square initial RandomCrop."""
  return int(initcrop * min(image_hw))


def _center_crop_offset(big: int, small: int) -> int:
  # torchvision's CenterCrop rounds half to even, like Python's round().
  return int(round((big - small) / 2.0))


def sample_rrc_boxes(seed: int, indices: np.ndarray, side: int,
                     scale: tuple[float, float],
                     ratio: tuple[float, float],
                     first_stream: int = _RRC_AREA) -> np.ndarray:
  """RandomResizedCrop boxes in a `side` x `side` image, resampled until valid.

  Area and log-aspect are sampled like torchvision; rows whose box does not
  fit are redrawn with the next attempt counter (no centre-crop fallback).

  Args:
    seed: data seed.
    indices: int array [B].
    side: side of the (square) image to crop from.
    scale: (min, max) fraction of the area.
    ratio: (min, max) aspect ratio w / h.
    first_stream: first of the four consecutive hash streams used.

  Returns:
    int64 [B, 4]: x0, y0, width, height.

  Raises:
    ValueError: if some rows stay invalid after many attempts.
  """
  indices = np.asarray(indices, np.int64)
  boxes = np.zeros((len(indices), 4), np.int64)
  pending = np.arange(len(indices))
  log_ratio = np.log(np.asarray(ratio, np.float64))
  for attempt in range(_MAX_RRC_ATTEMPTS):
    if not len(pending):
      return boxes
    idx = indices[pending]
    area = side * side * (scale[0] + (scale[1] - scale[0]) * hash_uniform(
        seed, idx, first_stream, attempt))
    aspect = np.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) *
                    hash_uniform(seed, idx, first_stream + 1, attempt))
    width = np.round(np.sqrt(area * aspect)).astype(np.int64)
    height = np.round(np.sqrt(area / aspect)).astype(np.int64)
    valid = (width > 0) & (width <= side) & (height > 0) & (height <= side)
    x0 = _randint(hash_uniform(seed, idx, first_stream + 2, attempt), 0,
                  side - width)
    y0 = _randint(hash_uniform(seed, idx, first_stream + 3, attempt), 0,
                  side - height)
    done = pending[valid]
    boxes[done] = np.stack([x0, y0, width, height], axis=1)[valid]
    pending = pending[~valid]
  if len(pending):
    raise ValueError(
        f"RandomResizedCrop scale={scale} ratio={ratio} found no valid box in a "
        f"{side}x{side} image after {_MAX_RRC_ATTEMPTS} attempts.")
  return boxes


def sample_patch_params(image_hw: tuple[int, int], patch_size: int, seed: int,
                        indices: np.ndarray, cfg: Any) -> dict[str, np.ndarray]:
  """Samples the chain's random parameters for each patch index.

  Args:
    image_hw: (H, W) of the source image.
    patch_size: P.
    seed: data seed.
    indices: int array [B] of patch indices.
    cfg: the input config (fields initcrop, rrc_scale, rrc_ratio, degrees,
      shear, vflip, jitter.{brightness, contrast, saturation, hue, p}).

  Returns:
    dict of arrays with leading dim B:
      src_affine  float64 [B, 2, 3]: (u, v, 1) -> source pixel index (x, y).
      rrc_affine  float64 [B, 2, 3]: (u, v, 1) -> RRC image continuous (x, y);
        pixels mapping outside [0, R)^2 are filled with 0.
      rrc_size    int64 [B]: R.
      zoom        float64 [B]: source pixels per output pixel.
      crop_box    int64 [B, 4]: the RRC box (x0, y0, w, h) in source pixels.
      angle, shear float64 [B] (degrees), vflip bool [B],
      jitter_apply bool [B], jitter_factors float64 [B, 4] (brightness,
      contrast, saturation factors and hue shift), jitter_order int64 [B, 4]
      (op ids into JITTER_OPS, in application order).
  """
  indices = np.asarray(indices, np.int64).reshape(-1)
  height, width = image_hw
  side = initial_crop_size(image_hw, cfg.initcrop)
  if min(height, width) < patch_size or side < patch_size:
    raise ValueError(
        f"Image {height}x{width} (initial crop {side}x{side}) is smaller than "
        f"the patch size {patch_size}.")
  num = len(indices)
  big = rrc_size(patch_size)

  def uniform(stream, low, high):
    return low + (high - low) * hash_uniform(seed, indices, stream)

  crop_x = _randint(hash_uniform(seed, indices, _CROP_X), 0, width - side)
  crop_y = _randint(hash_uniform(seed, indices, _CROP_Y), 0, height - side)
  box = sample_rrc_boxes(seed, indices, side, tuple(cfg.rrc_scale),
                         tuple(cfg.rrc_ratio))
  box[:, 0] += crop_x
  box[:, 1] += crop_y
  angle = uniform(_ANGLE, -cfg.degrees, cfg.degrees)
  shear = uniform(_SHEAR, -cfg.shear, cfg.shear)
  vflip = (hash_uniform(seed, indices, _VFLIP) < 0.5) & bool(cfg.vflip)

  # Output pixel (u, v) -> continuous coords g in the R x R rotated image.
  offset = _center_crop_offset(big, patch_size)
  out_to_g = np.zeros((num, 3, 3))
  out_to_g[:, 0, 0] = 1.0
  out_to_g[:, 0, 2] = offset + 0.5
  out_to_g[:, 1, 1] = np.where(vflip, -1.0, 1.0)
  out_to_g[:, 1, 2] = np.where(vflip, big - offset - 0.5, offset + 0.5)
  out_to_g[:, 2, 2] = 1.0
  # Rotated image -> RRC image: inverse of rotation @ x-shear, about the centre.
  theta, phi = np.deg2rad(angle), np.deg2rad(shear)
  cos, sin, tan = np.cos(theta), np.sin(theta), np.tan(phi)
  inv_rotation = np.stack([np.stack([cos, sin], -1),
                           np.stack([-sin, cos], -1)], -2)
  inv_shear = np.zeros((num, 2, 2))
  inv_shear[:, 0, 0] = inv_shear[:, 1, 1] = 1.0
  inv_shear[:, 0, 1] = -tan
  linear = inv_shear @ inv_rotation
  center = np.full((num, 2), big / 2.0)
  g_to_rrc = np.zeros((num, 3, 3))
  g_to_rrc[:, :2, :2] = linear
  g_to_rrc[:, :2, 2] = center - np.einsum("bij,bj->bi", linear, center)
  g_to_rrc[:, 2, 2] = 1.0
  rrc_affine = g_to_rrc @ out_to_g
  # RRC image continuous coords -> source pixel indices (centres at integers).
  rrc_to_src = np.zeros((num, 3, 3))
  rrc_to_src[:, 0, 0] = box[:, 2] / big
  rrc_to_src[:, 1, 1] = box[:, 3] / big
  rrc_to_src[:, :2, 2] = box[:, :2] - 0.5
  rrc_to_src[:, 2, 2] = 1.0
  src_affine = rrc_to_src @ rrc_affine

  jitter = cfg.jitter
  factors = np.stack([
      uniform(_JITTER_FACTOR[0], 1 - jitter.brightness, 1 + jitter.brightness),
      uniform(_JITTER_FACTOR[1], 1 - jitter.contrast, 1 + jitter.contrast),
      uniform(_JITTER_FACTOR[2], 1 - jitter.saturation, 1 + jitter.saturation),
      uniform(_JITTER_FACTOR[3], -jitter.hue, jitter.hue),
  ], axis=1)
  order_keys = hash_uniform(seed, indices[:, None], _JITTER_ORDER,
                            np.arange(4)[None, :])
  return {
      "src_affine": src_affine[:, :2],
      "rrc_affine": rrc_affine[:, :2],
      "rrc_size": np.full(num, big, np.int64),
      # Rotation and shear preserve area, so only the RRC box scales.
      "zoom": np.sqrt(box[:, 2] * box[:, 3]) / big,
      "crop_box": box,
      "angle": angle,
      "shear": shear,
      "vflip": vflip,
      "jitter_apply": hash_uniform(seed, indices, _JITTER_APPLY) < jitter.p,
      "jitter_factors": factors,
      "jitter_order": np.argsort(order_keys, axis=1).astype(np.int64),
  }


def render_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The params the renderers read, as float32/int32/bool arrays."""
  out = {}
  for key in RENDER_KEYS:
    value = np.asarray(params[key])
    if value.dtype == np.float64:
      value = value.astype(np.float32)
    elif value.dtype == np.int64:
      value = value.astype(np.int32)
    out[key] = value
  return out


def effective_zoom(params: dict[str, np.ndarray]) -> np.ndarray:
  """Source pixels per output pixel of each patch (geometric mean over axes)."""
  return params["zoom"]


# A texel is RGB in one int32: three TEXEL_BITS-bit fields (R lowest), each
# holding round(TEXEL_SCALE * value) for a value in [0, 255]. The renderers
# gather one int32 per tap (on XLA:CPU ~4x cheaper than a row of 3 floats);
# quarter levels keep the box-filtered pyramid levels within 1/8 of a level.
TEXEL_BITS = 10
TEXEL_SCALE = 4


def pack_texels(rgb: np.ndarray) -> np.ndarray:
  """[..., 3] values in [0, 255] -> int32 [...] texels."""
  q = np.round(np.asarray(rgb, np.float64) * TEXEL_SCALE).astype(np.int32)
  return q[..., 0] | (q[..., 1] << TEXEL_BITS) | (q[..., 2] << 2 * TEXEL_BITS)


@dataclasses.dataclass(frozen=True)
class Pyramid:
  """A mip pyramid packed into one flat atlas (shared by the tf/jax renderers).

  The atlas is a 2-D table of `stride` texels per row, flattened; level l
  occupies rows first_rows[l] .. first_rows[l] + heights[l] + 1 with a
  one-texel border replicating its edges. Level l's pixel (x, y), for x in
  [-1, widths[l]] and y in [-1, heights[l]], is entry
  (first_rows[l] + y + 1) * stride + x + 1: the four bilinear taps of a
  point are a corner index plus (0, 1, stride, stride + 1), and clamping
  the corner to [-1, size - 1] clamps the taps like edge replication.

  Attributes:
    atlas: int32 [rows * stride] texels (`pack_texels`); 0 beyond a level's
      bordered width.
    first_rows: first atlas row of each level (its top border).
    heights: height of each level.
    widths: width of each level.
    stride: texels per atlas row: the widest level's width + 2.
    patch_size: P, the side of the patches rendered from it.
  """
  atlas: Any
  first_rows: tuple[int, ...]
  heights: tuple[int, ...]
  widths: tuple[int, ...]
  stride: int
  patch_size: int

  @property
  def num_levels(self) -> int:
    return len(self.first_rows)


def build_pyramid(image: np.ndarray, patch_size: int) -> Pyramid:
  """2x box-filtered levels of `image` until the smaller side is < patch_size.

  Level l holds pixel centres at (k + 0.5) 2^l - 0.5 in level-0 pixel indices;
  odd sides are padded by edge replication so that this holds exactly. Each
  level is filtered from the unrounded level below and rounded once.

  Args:
    image: uint8 [H, W, 3].
    patch_size: P; the coarsest level is the first one smaller than P.

  Returns:
    The packed Pyramid.
  """
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"Expected an [H, W, 3] image, got shape {image.shape}.")
  level = image.astype(np.float32)
  levels = [level]
  while min(level.shape[:2]) >= patch_size and min(level.shape[:2]) > 1:
    pad = ((0, level.shape[0] % 2), (0, level.shape[1] % 2), (0, 0))
    level = np.pad(level, pad, mode="edge")
    level = 0.25 * (level[0::2, 0::2] + level[1::2, 0::2] +
                    level[0::2, 1::2] + level[1::2, 1::2])
    levels.append(level)
  stride = levels[0].shape[1] + 2
  bordered = [np.pad(pack_texels(lv), 1, mode="edge") for lv in levels]
  first_rows = np.cumsum([0] + [b.shape[0] for b in bordered[:-1]])
  atlas = np.zeros((sum(b.shape[0] for b in bordered), stride), np.int32)
  for row, b in zip(first_rows, bordered):
    atlas[row:row + b.shape[0], :b.shape[1]] = b
  return Pyramid(
      atlas=atlas.reshape(-1),
      first_rows=tuple(int(r) for r in first_rows),
      heights=tuple(lv.shape[0] for lv in levels),
      widths=tuple(lv.shape[1] for lv in levels),
      stride=stride,
      patch_size=patch_size)
