"""Distillation-time views of fake clips and AugMix, keyed by the position q.

Each training sample q shows a fake clip (clips.py) through the official
training transform of the paper's video code (video/distiller.py):

  clip_frames consecutive frames, every frame_stride-th, from a uniform start
      (input.video; 4 frames at sampling rate 1 in the official code)
  RandomShortSideScale(short_side)   the frame scaled to side s, an integer
      uniform in [183, 229]
  RandomCrop(P)                      P = input.patch_size (160)
  RandomHorizontalFlip(0.5)          (input.video.hflip)
  AugMix of the whole clip           pytorchvideo's AugMix (magnitude 3,
      width 3, depth 1-3, alpha 1): the same ops and magnitudes for every
      frame, statistics (autocontrast, equalize, contrast) per frame

`sample_views` draws the first four as frame indices and a `clips.View`, so
the renderer resamples each frame once from the source image (scale, crop
and flip folded into its affine map). The official code runs AugMix on the
230-px frames before the scale and the crop; here it runs on the rendered
P x P clip, so its rotations, shears and translations turn about the crop's
centre (translations by up to a third of P instead of 230 px), and its fill
shows inside the crop more often. pytorchvideo's fill (0.5, 0.5, 0.5) is in
pixel units for the official uint8 clips, i.e. black; so it is here.

AugMix's ops follow torchvision's uint8 semantics (each op returns uint8:
truncation, except the geometric ops, which round) with every random number a
counter-based draw of (seed, q) (`randomness.Draws`): pytorchvideo draws from torch's
global generator, which would make a clip depend on the worker that made it.
numpy only.
"""

from typing import Any, Callable

import numpy as np

from input_pipeline import randomness
from input_pipeline.video import clips

# Hash streams (randomness.py: 521-525, 531).
_START, _SIDE, _CROP_X, _CROP_Y, _FLIP = 521, 522, 523, 524, 525
_AUGMIX = 531

# pytorchvideo's augmentation levels run to 10; a magnitude-M op draws its
# level uniformly in [0.1, M] ('sampling_min' 0.1).
_MAX_LEVEL = 10.0
_MIN_LEVEL = 0.1
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale.
_FILL = 0.5


def clip_span(video_cfg: Any) -> int:
  """Frames of the fake clip that one sample spans."""
  return (video_cfg.clip_frames - 1) * video_cfg.frame_stride + 1


def sample_views(seed: int, positions: np.ndarray, video_cfg: Any,
                 out: int) -> tuple[np.ndarray, clips.View]:
  """Frames and view of each sample position.

  Args:
    seed: data seed.
    positions: int global sample positions q [n].
    video_cfg: `input.video` (frames, clip_frames, frame_stride, short_side,
      hflip).
    out: P, the side of the frames the network sees.

  Returns:
    int64 frame indices [n, clip_frames] and the clips.View of each row.

  Raises:
    ValueError: the clip is shorter than a sample, or the short side is
      smaller than P.
  """
  positions = np.asarray(positions, np.int64).reshape(-1)
  span, num_frames = clip_span(video_cfg), video_cfg.frames
  low, high = (int(s) for s in video_cfg.short_side)
  if span > num_frames:
    raise ValueError(f"A sample spans {span} frames (clip_frames "
                     f"{video_cfg.clip_frames}, frame_stride "
                     f"{video_cfg.frame_stride}); the fake clips have "
                     f"{num_frames}.")
  if not out <= low <= high:
    raise ValueError(f"short_side {tuple(video_cfg.short_side)} must be "
                     f"ordered and >= the crop {out}.")

  def randint(stream, low, high):
    return clips.randint(randomness.hash_uniform(seed, positions, stream),
                         low, high)

  start = randint(_START, 0, num_frames - span)
  frames = start[:, None] + video_cfg.frame_stride * np.arange(
      video_cfg.clip_frames)
  side = randint(_SIDE, low, high)
  flip = (randomness.hash_uniform(seed, positions, _FLIP) < 0.5) & bool(
      video_cfg.hflip)
  view = clips.View(side.astype(np.float64),
                    randint(_CROP_X, 0, side - out).astype(np.float64),
                    randint(_CROP_Y, 0, side - out).astype(np.float64), flip)
  return frames, view


# --- AugMix ops on uint8 clips [T, H, W, 3]; statistics per frame. ---


def _to_uint8(x: np.ndarray) -> np.ndarray:
  """torchvision's float -> uint8 after a blend: clamp, then truncate."""
  return np.clip(x, 0, 255).astype(np.uint8)


def _gray(x: np.ndarray) -> np.ndarray:
  """uint8 luma [T, H, W, 1], truncated like torchvision's on uint8."""
  return np.floor(np.tensordot(x.astype(np.float32), np.float32(_GRAY),
                               axes=(-1, 0)))[..., None]


def _blend(x: np.ndarray, other: np.ndarray, factor: float) -> np.ndarray:
  return _to_uint8(factor * x.astype(np.float32) + (1.0 - factor) * other)


def _autocontrast(x: np.ndarray, level: float) -> np.ndarray:
  del level
  low = x.min(axis=(1, 2), keepdims=True).astype(np.float32)
  high = x.max(axis=(1, 2), keepdims=True).astype(np.float32)
  flat = high == low
  scale = np.where(flat, 1.0, 255.0 / np.where(flat, 1.0, high - low))
  return _to_uint8((x - np.where(flat, 0.0, low)) * scale)


def _equalize(x: np.ndarray, level: float) -> np.ndarray:
  """torchvision's equalize, per frame and channel."""
  del level
  out = x.copy()
  for t in range(x.shape[0]):
    for c in range(x.shape[-1]):
      channel = x[t, ..., c]
      hist = np.bincount(channel.reshape(-1), minlength=256)
      nonzero = hist[hist != 0]
      step = int(nonzero[:-1].sum()) // 255
      if step == 0:
        continue
      lut = (np.cumsum(hist) + step // 2) // step
      lut = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255).astype(np.uint8)
      out[t, ..., c] = lut[channel]
  return out


def _warp(x: np.ndarray, affine: np.ndarray) -> np.ndarray:
  """Bilinear resampling: output (u, v, 1) -> input (x, y) = affine @ (u, v, 1).

  torchvision's grid_sample with zero padding and a fill: taps outside the
  frame weigh 0, the sampled image is blended with the fill by the sampled
  coverage m as s * m + (1 - m) * fill, then rounded.
  """
  height, width = x.shape[1:3]
  v, u = np.mgrid[0:height, 0:width].astype(np.float64)
  src_x = affine[0, 0] * u + affine[0, 1] * v + affine[0, 2]
  src_y = affine[1, 0] * u + affine[1, 1] * v + affine[1, 2]
  x0, y0 = np.floor(src_x).astype(np.int64), np.floor(src_y).astype(np.int64)
  ax, ay = src_x - x0, src_y - y0
  sampled = np.zeros(x.shape, np.float64)
  coverage = np.zeros((height, width), np.float64)
  for dy, wy in ((0, 1 - ay), (1, ay)):
    for dx, wx in ((0, 1 - ax), (1, ax)):
      xs, ys = x0 + dx, y0 + dy
      valid = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
      weight = wx * wy * valid
      taps = x[:, np.clip(ys, 0, height - 1), np.clip(xs, 0, width - 1)]
      sampled += weight[None, ..., None] * taps
      coverage += weight
  coverage = coverage[None, ..., None]
  mixed = sampled * coverage + (1.0 - coverage) * _FILL
  return np.round(mixed).astype(np.uint8)


def _signed(level: float, top: float, sign: float) -> float:
  """pytorchvideo's `_increasing_randomly_negate_to_arg`: +-level/10 * top."""
  return sign * level / _MAX_LEVEL * top


def _rotate(x: np.ndarray, degrees: float) -> np.ndarray:
  """Counter-clockwise about the frame's centre, as torchvision's rotate."""
  height, width = x.shape[1:3]
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
  cos, sin = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
  return _warp(x, np.array([[cos, -sin, cx - cos * cx + sin * cy],
                            [sin, cos, cy - sin * cx - cos * cy]]))


def _shear_x(x: np.ndarray, factor: float) -> np.ndarray:
  # pytorchvideo's matrix [1, f, H f / 2; 0, 1, 0] on centred coordinates:
  # x_in = u + f (v + 0.5), a shear about the frame's top edge.
  return _warp(x, np.array([[1.0, factor, 0.5 * factor], [0.0, 1.0, 0.0]]))


def _shear_y(x: np.ndarray, factor: float) -> np.ndarray:
  return _warp(x, np.array([[1.0, 0.0, 0.0], [factor, 1.0, 0.5 * factor]]))


def _translate(x: np.ndarray, dx: float, dy: float) -> np.ndarray:
  return _warp(x, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]))


def _posterize(x: np.ndarray, bits: int) -> np.ndarray:
  return x & np.uint8((0xFF << (8 - bits)) & 0xFF)


def _solarize(x: np.ndarray, factor: float) -> np.ndarray:
  threshold = int(factor * 255.0)  # pytorchvideo's, for uint8 clips.
  return np.where(x >= threshold, 255 - x, x).astype(np.uint8)


def _saturation(x: np.ndarray, factor: float) -> np.ndarray:
  return _blend(x, _gray(x), factor)


def _contrast(x: np.ndarray, factor: float) -> np.ndarray:
  return _blend(x, _gray(x).mean(axis=(1, 2, 3), keepdims=True), factor)


def _brightness(x: np.ndarray, factor: float) -> np.ndarray:
  return _blend(x, 0.0, factor)


def _sharpness(x: np.ndarray, factor: float) -> np.ndarray:
  """Blend with a 3x3 smoothing (centre weight 5 of 13) of the interior."""
  if min(x.shape[1:3]) <= 2:
    return x
  f = x.astype(np.float32)
  height, width = x.shape[1:3]
  smooth = sum(f[:, dy:height - 2 + dy, dx:width - 2 + dx]
               for dy in range(3) for dx in range(3))
  smooth = (smooth + 4.0 * f[:, 1:-1, 1:-1]) / 13.0
  degenerate = f.copy()
  degenerate[:, 1:-1, 1:-1] = np.round(smooth)
  return _blend(x, degenerate, factor)


def _magnitude(level: float) -> float:
  """`_increasing_magnitude_to_arg` with (0.1, 1.8): 0.1 + level / 10 * 1.8."""
  return 0.1 + level / _MAX_LEVEL * 1.8


# name -> (op(x, level, sign)); the levels map to arguments as pytorchvideo's
# _AUGMIX_LEVEL_TO_ARG and _TRANSFORM_AUGMIX_MAX_PARAMS do.
AUGMIX_OPS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "AutoContrast": lambda x, level, sign: _autocontrast(x, level),
    "Equalize": lambda x, level, sign: _equalize(x, level),
    "Rotate": lambda x, level, sign: _rotate(x, _signed(level, 30.0, sign)),
    "Posterize": lambda x, level, sign: _posterize(
        x, 4 - int(level / _MAX_LEVEL * 4)),
    "Solarize": lambda x, level, sign: _solarize(x, 1.0 - level / _MAX_LEVEL),
    "ShearX": lambda x, level, sign: _shear_x(x, _signed(level, 0.3, sign)),
    "ShearY": lambda x, level, sign: _shear_y(x, _signed(level, 0.3, sign)),
    "TranslateX": lambda x, level, sign: _translate(
        x, _signed(level, 1 / 3, sign) * x.shape[2], 0.0),
    "TranslateY": lambda x, level, sign: _translate(
        x, 0.0, _signed(level, 1 / 3, sign) * x.shape[1]),
    "AdjustSaturation": lambda x, level, sign: _saturation(
        x, _magnitude(level)),
    "AdjustContrast": lambda x, level, sign: _contrast(x, _magnitude(level)),
    "AdjustBrightness": lambda x, level, sign: _brightness(
        x, _magnitude(level)),
    "AdjustSharpness": lambda x, level, sign: _sharpness(
        x, _magnitude(level)),
}
_OP_NAMES = tuple(AUGMIX_OPS)


def _gamma(draws: randomness.Draws, alpha: float) -> float:
  """Gamma(alpha, 1) by Marsaglia and Tsang (boosted below alpha = 1)."""
  boost = 1.0
  if alpha < 1.0:
    boost = draws.uniform() ** (1.0 / alpha)
    alpha += 1.0
  d = alpha - 1.0 / 3.0
  c = 1.0 / np.sqrt(9.0 * d)
  while True:
    z = float(draws.normal(1)[0])
    v = (1.0 + c * z) ** 3
    if v > 0 and np.log1p(-draws.uniform()) < (0.5 * z * z + d - d * v
                                               + d * np.log(v)):
      return d * v * boost


Plan = tuple[np.ndarray, float, list[list[tuple[str, float, float]]]]


def augmix_plan(draws: randomness.Draws, video_cfg: Any) -> Plan:
  """AugMix's random choices for one clip, in pytorchvideo's order.

  Returns:
    (Dirichlet(alpha) chain weights [width], the Beta(alpha, alpha) weight m
    of the original clip, and per chain its ops as (name, level, sign)).
  """
  alpha, width = float(video_cfg.augmix_alpha), int(video_cfg.augmix_width)
  gammas = np.array([_gamma(draws, alpha) for _ in range(width)])
  weights = gammas / gammas.sum()
  first, second = _gamma(draws, alpha), _gamma(draws, alpha)
  m = first / (first + second)
  chains = []
  for _ in range(width):
    depth = int(video_cfg.augmix_depth)
    if depth <= 0:
      depth = 1 + min(int(draws.uniform() * 3), 2)
    ops = []
    for _ in range(depth):
      name = _OP_NAMES[min(int(draws.uniform() * len(_OP_NAMES)),
                           len(_OP_NAMES) - 1)]
      level = _MIN_LEVEL + draws.uniform() * (
          float(video_cfg.augmix_magnitude) - _MIN_LEVEL)
      # torch negates when its draw is <= 0.5.
      ops.append((name, level, 1.0 if draws.uniform() > 0.5 else -1.0))
    chains.append(ops)
  return weights, m, chains


def augmix(clip: np.ndarray, seed: int, position: int,
           video_cfg: Any) -> np.ndarray:
  """pytorchvideo's AugMix of one uint8 clip [T, H, W, 3], drawn for q.

  m * clip + (1 - m) * sum_i w_i chain_i(clip), truncated to uint8, where
  each chain applies its ops in turn to the original clip.
  """
  weights, m, chains = augmix_plan(randomness.Draws(seed, position, _AUGMIX), video_cfg)
  mixed = np.zeros(clip.shape, np.float32)
  for weight, ops in zip(weights, chains):
    chained = clip
    for name, level, sign in ops:
      chained = AUGMIX_OPS[name](chained, level, sign)
    mixed += np.float32(weight) * chained
  return (np.float32(m) * clip + np.float32(1.0 - m) * mixed).astype(np.uint8)
