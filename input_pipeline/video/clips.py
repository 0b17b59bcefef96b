"""Fake clips of one image, each a pure function of (image size, seed, index).

Clip i follows the official generator (make_fakevideo_dataset.py of the
paper's code; paper App. B.1):

  RandomCrop of a square of side initcrop * min(H, W)   (input.initcrop)
  ColorJitter, once per clip                             (input.jitter)
  two RandomResizedCrop boxes A, B of that square        (input.rrc_scale,
      rrc_ratio; resampled until valid, no centre-crop fallback)
  frame f of F (input.video.frames): the box whose (top, left, height,
      width) is (1 - t) A + t B, t = f / (F - 1), resized to a square of
      side input.video.frame_size

so a clip pans and zooms linearly from A to B. The official generator
writes F = 16 frames of 230 px (the paper's text says 12 frames); 200k
clips in the paper, here `input.num_patches` clips rendered on the fly.

Every frame is one affine map from output pixels to source pixels, so the
patch renderer (image/renderer.py: mip-pyramid sampling, antialiased at any
zoom, then the colour jitter) renders them, one row per frame. The frame is
seen through a `View`: the frame scaled to side `side`, the out x out window
at (x, y) of it, optionally mirrored; the identity view shows the frame
itself, the distillation-time views (augment.py) compose the short-side
scale, crop and flip into the same single map, so a training sample is
resampled from the source image once.

Differences from the official generator: frames are sampled from the mip
pyramid (antialiased trilinear) instead of PIL's bicubic resize, and the
jitter's contrast blends each frame towards its own mean grey (torchvision
jitters the square crop once, so towards the crop's mean); brightness,
saturation and hue are per pixel and the same either way.

numpy only: this module runs on accelerator hosts without TensorFlow.
"""

import dataclasses
from typing import Any

import numpy as np

from input_pipeline import randomness
from input_pipeline.image import patch_params

# Hash streams (randomness.py: 501-516).
_CROP_X, _CROP_Y = 501, 502
_BOX_A, _BOX_B = 503, 507  # Four consecutive streams each.
_JITTER_APPLY = 511
_JITTER_FACTOR = (512, 513, 514, 515)
_JITTER_ORDER = 516


@dataclasses.dataclass(frozen=True)
class View:
  """How each output frame sees its fake frame; arrays of one row per clip.

  Output pixel (u, v) of an out x out frame shows pixel (x + u', y + v) of
  the fake frame scaled to side x side, u' = out - 1 - u when `flip`, else u.

  Attributes:
    side: float [n], the scaled frame's side in pixels.
    x: float [n], the window's left column in the scaled frame.
    y: float [n], its top row.
    flip: bool [n], mirror horizontally.
  """
  side: np.ndarray
  x: np.ndarray
  y: np.ndarray
  flip: np.ndarray


def identity_view(num: int, frame_size: int) -> View:
  """The fake frames themselves: side frame_size, no crop, no flip."""
  return View(np.full(num, float(frame_size)), np.zeros(num), np.zeros(num),
              np.zeros(num, bool))


def randint(u: np.ndarray, low, high) -> np.ndarray:
  """Integers uniform in [low, high] (inclusive) from uniforms `u`."""
  span = np.asarray(high) - np.asarray(low) + 1
  return np.asarray(low) + np.minimum(np.floor(u * span), span - 1).astype(
      np.int64)


def sample_clip_params(image_hw: tuple[int, int], seed: int,
                       indices: np.ndarray, cfg: Any) -> dict[str, np.ndarray]:
  """Random parameters of fake clips `indices`.

  Args:
    image_hw: (H, W) of the source image.
    seed: data seed.
    indices: int clip indices [n].
    cfg: the input config (initcrop, rrc_scale, rrc_ratio, jitter).

  Returns:
    dict of arrays with leading dim n:
      crop_xy     int64 [n, 2]: the initial square crop's left, top.
      boxes       float64 [n, 2, 4]: boxes A and B as (top, left, height,
        width) in the square crop's pixels.
      jitter_apply bool [n], jitter_factors float64 [n, 4], jitter_order
        int64 [n, 4]: as image/patch_params.py, shared by a clip's frames.
  """
  indices = np.asarray(indices, np.int64).reshape(-1)
  height, width = image_hw
  side = patch_params.initial_crop_size(image_hw, cfg.initcrop)
  if side < 1:
    raise ValueError(f"Initial crop of {height}x{width} with initcrop="
                     f"{cfg.initcrop} is empty.")
  crop_x = randint(randomness.hash_uniform(seed, indices, _CROP_X), 0,
                    width - side)
  crop_y = randint(randomness.hash_uniform(seed, indices, _CROP_Y), 0,
                    height - side)
  boxes = []
  for first_stream in (_BOX_A, _BOX_B):
    x0, y0, w, h = patch_params.sample_rrc_boxes(
        seed, indices, side, tuple(cfg.rrc_scale), tuple(cfg.rrc_ratio),
        first_stream=first_stream).T
    boxes.append(np.stack([y0, x0, h, w], axis=1).astype(np.float64))

  jitter = cfg.jitter

  def uniform(stream, low, high):
    return low + (high - low) * randomness.hash_uniform(seed, indices, stream)

  factors = np.stack([
      uniform(_JITTER_FACTOR[0], 1 - jitter.brightness, 1 + jitter.brightness),
      uniform(_JITTER_FACTOR[1], 1 - jitter.contrast, 1 + jitter.contrast),
      uniform(_JITTER_FACTOR[2], 1 - jitter.saturation, 1 + jitter.saturation),
      uniform(_JITTER_FACTOR[3], -jitter.hue, jitter.hue),
  ], axis=1)
  order_keys = randomness.hash_uniform(seed, indices[:, None], _JITTER_ORDER,
                                       np.arange(4)[None, :])
  return {
      "crop_xy": np.stack([crop_x, crop_y], axis=1),
      "boxes": np.stack(boxes, axis=1),
      "jitter_apply": (randomness.hash_uniform(seed, indices, _JITTER_APPLY)
                       < jitter.p),
      "jitter_factors": factors,
      "jitter_order": np.argsort(order_keys, axis=1).astype(np.int64),
  }


def frame_boxes(params: dict[str, np.ndarray], frames: np.ndarray,
                num_frames: int) -> np.ndarray:
  """(top, left, height, width) of frames `frames` [n, T]: float64 [n, T, 4].

  Frame f of a clip of num_frames is (1 - t) A + t B with t = f / (F - 1),
  np.linspace's points, as the official generator interpolates.
  """
  t = np.asarray(frames, np.float64) / max(num_frames - 1, 1)
  box_a, box_b = params["boxes"][:, None, 0], params["boxes"][:, None, 1]
  return (1.0 - t[..., None]) * box_a + t[..., None] * box_b


def render_params(params: dict[str, np.ndarray], frames: np.ndarray,
                  num_frames: int, view: View, out: int
                  ) -> dict[str, np.ndarray]:
  """Renderer params (image/patch_params.RENDER_KEYS) of every frame shown.

  Args:
    params: `sample_clip_params` of n clips.
    frames: int [n, T], which frames of each clip.
    num_frames: F, frames per fake clip.
    view: one row per clip (the same for all its frames).
    out: side of the rendered frames (the renderer's patch size).

  Returns:
    float32/int32/bool arrays with n * T rows, clip-major.
  """
  frames = np.asarray(frames, np.int64)
  num, length = frames.shape
  box = frame_boxes(params, frames, num_frames)
  top, left, height, width = np.moveaxis(box, -1, 0)
  # Pixel centres: output u (+ the view) -> scaled-frame pixel x' -> source
  # index crop + left + (x' + 0.5) * width / side - 0.5 (F.resized_crop).
  col = lambda a: np.asarray(a, np.float64)[:, None]
  scale_x, scale_y = width / col(view.side), height / col(view.side)
  flip = col(view.flip) > 0
  start_x = (col(params["crop_xy"][:, 0]) + left - 0.5
             + (col(view.x) + 0.5) * scale_x)
  start_y = (col(params["crop_xy"][:, 1]) + top - 0.5
             + (col(view.y) + 0.5) * scale_y)
  src = np.zeros((num, length, 2, 3))
  src[..., 0, 0] = np.where(flip, -scale_x, scale_x)
  src[..., 0, 2] = np.where(flip, start_x + (out - 1) * scale_x, start_x)
  src[..., 1, 1] = scale_y
  src[..., 1, 2] = start_y
  # Every output pixel is inside the frame: nothing is zero-filled.
  inside = np.broadcast_to(np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]),
                           (num * length, 2, 3))

  def per_frame(value):
    return np.repeat(np.asarray(value), length, axis=0)

  return patch_params.render_params({
      "src_affine": src.reshape(-1, 2, 3),
      "rrc_affine": inside,
      "rrc_size": np.full(num * length, out, np.int64),
      "zoom": np.sqrt(scale_x * scale_y).reshape(-1),
      "jitter_apply": per_frame(params["jitter_apply"]),
      "jitter_factors": per_frame(params["jitter_factors"]),
      "jitter_order": per_frame(params["jitter_order"]),
  })
