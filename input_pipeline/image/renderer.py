"""The patch renderer and the distillation augmentation, for tf and for jax.

See `patch_params` for the parameter layout. Each output pixel maps through
one affine to the source image, is sampled trilinearly from the two mip
levels around log2(zoom) (antialiasing like a filtered resize at O(P^2) cost
per patch, whatever the crop size) and set to 0 where RandomAffine would
fill; then the colour jitter runs. Everything is vectorised over the batch.

The math is written once against an `ops.Ops` of array primitives; backend
'tf' runs it in tf.data workers (CPU), backend 'jax' jitted on the default
device, for hosts without TensorFlow. Each keeps its library's float
semantics, so the two agree to float rounding, not bit for bit.
`make_renderer` is the one way to get a renderer.
"""

import abc
import itertools
from typing import Any, Callable, Iterator, Mapping

import numpy as np

import input_pipeline

from big_vision_sid.registry import Registry
from input_pipeline.image import patch_params
from input_pipeline.image import ops as array_ops

BACKENDS = Registry("input backend")
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _pixel_grid(ops: array_ops.Ops, size: int) -> tuple[Any, Any]:
  v, u = ops.meshgrid(ops.arange(size, dtype=ops.float32),
                      ops.arange(size, dtype=ops.float32), indexing="ij")
  return u, v


def _apply_affine(affine, u, v):
  """affine [B, 2, 3], grid [P, P] -> x, y [B, P, P]."""
  a = affine[:, :, :, None, None]
  return (a[:, 0, 0] * u + a[:, 0, 1] * v + a[:, 0, 2],
          a[:, 1, 0] * u + a[:, 1, 1] * v + a[:, 1, 2])


def _bilinear_taps(ops, x, y, offset, height, width):
  """Flat atlas indices [B, P, P, 4] and weights of bilinear sampling."""
  x_floor, y_floor = ops.floor(x), ops.floor(y)
  ax, ay = x - x_floor, y - y_floor
  width = ops.cast(width, ops.int32)[:, None, None]
  height = ops.cast(height, ops.int32)[:, None, None]
  x0 = ops.cast(x_floor, ops.int32)
  y0 = ops.cast(y_floor, ops.int32)
  xs = [ops.clip(x0 + d, 0, width - 1) for d in (0, 1)]
  ys = [ops.clip(y0 + d, 0, height - 1) for d in (0, 1)]
  base = ops.cast(offset, ops.int32)[:, None, None]
  indices = ops.stack([base + ys[j] * width + xs[i]
                       for j in (0, 1) for i in (0, 1)], axis=-1)
  weights = ops.stack([(1 - ay) * (1 - ax), (1 - ay) * ax,
                       ay * (1 - ax), ay * ax], axis=-1)
  return indices, weights


def _sample_pyramid(ops, pyramid, atlas, params):
  """Trilinear mip samples [B, P, P, 3] (float, [0, 1], 0 where filled)."""
  u, v = _pixel_grid(ops, pyramid.patch_size)
  src_x, src_y = _apply_affine(ops.cast(params["src_affine"], ops.float32),
                               u, v)
  rrc_x, rrc_y = _apply_affine(ops.cast(params["rrc_affine"], ops.float32),
                               u, v)
  big = ops.cast(params["rrc_size"], ops.float32)[:, None, None]
  inside = (rrc_x >= 0) & (rrc_x < big) & (rrc_y >= 0) & (rrc_y < big)

  num_levels = pyramid.num_levels
  level = ops.clip(
      ops.log(ops.cast(params["zoom"], ops.float32)) / ops.log(2.0),
      0.0, float(num_levels - 1))
  level0 = ops.cast(ops.floor(level), ops.int32)
  level1 = ops.minimum(level0 + 1, num_levels - 1)
  blend = (level - ops.cast(level0, ops.float32))[:, None, None, None]
  offsets = ops.asarray(pyramid.offsets, ops.offset_dtype)
  heights = ops.asarray(pyramid.heights, ops.int32)
  widths = ops.asarray(pyramid.widths, ops.int32)
  all_indices, all_weights = [], []
  for lvl, level_weight in ((level0, 1.0 - blend), (level1, blend)):
    inv_scale = ops.power(2.0, -ops.cast(lvl, ops.float32))[:, None, None]
    x = (src_x + 0.5) * inv_scale - 0.5
    y = (src_y + 0.5) * inv_scale - 0.5
    indices, weights = _bilinear_taps(
        ops, x, y, ops.take(offsets, lvl), ops.take(heights, lvl),
        ops.take(widths, lvl))
    all_indices.append(indices)
    all_weights.append(weights * level_weight)
  indices = ops.concat(all_indices, axis=-1)
  weights = ops.concat(all_weights, axis=-1)
  pixels = ops.sum(ops.take(atlas, indices) * weights[..., None], axis=-2)
  return pixels * ops.cast(inside, ops.float32)[..., None]


def _gray(ops, x):
  return ops.sum(x * ops.asarray(_GRAY_WEIGHTS, x.dtype), axis=-1,
                 keepdims=True)


def _blend(ops, x, other, factor):
  return ops.clip(factor * x + (1.0 - factor) * other, 0.0, 1.0)


def _rgb_to_hsv(ops, x):
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc = ops.max(x, axis=-1)
  minc = ops.min(x, axis=-1)
  delta = maxc - minc
  safe_delta = ops.where(delta > 0, delta, 1.0)
  sat = ops.where(maxc > 0, delta / ops.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = [(maxc - c) / safe_delta for c in (r, g, b)]
  hue = ops.where(r == maxc, bc - gc,
                  ops.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  hue = ops.where(delta > 0, ops.mod(hue / 6.0, 1.0), 0.0)
  return hue, sat, maxc


def _hsv_to_rgb(ops, hue, sat, val):
  # Closed form of the six-sector HSV->RGB: channel n has
  # k = (n + 6 h) mod 6 and c = v - v s clip(min(k, 4 - k), 0, 1).
  chroma = val * sat
  channels = []
  for n in (5.0, 3.0, 1.0):
    k = ops.mod(n + 6.0 * hue, 6.0)
    channels.append(
        val - chroma * ops.clip(ops.minimum(k, 4.0 - k), 0.0, 1.0))
  return ops.stack(channels, axis=-1)


def _adjust_hue(ops, x, shift):
  """Shifts the hue of x [B, H, W, 3] by shift [B, 1, 1, 1] (in turns)."""
  hue, sat, val = _rgb_to_hsv(ops, x)
  return _hsv_to_rgb(ops, ops.mod(hue + shift[..., 0], 1.0), sat, val)


def _color_jitter(ops, x, params):
  """torchvision ColorJitter with per-patch factors, op order and apply flag.

  Hue (the costly op) runs only on the rows that apply it at a step, and
  nothing on the rows that skip jitter (about 1/8 of the naive work) where
  `ops` can select rows (tf); jax computes every row and selects with where.
  """
  rows = ops.select_rows(ops.cast(params["jitter_apply"], ops.bool_))
  factors = ops.gather_rows(ops.cast(params["jitter_factors"], ops.float32),
                            rows)[:, None, None, None]
  order = ops.gather_rows(ops.cast(params["jitter_order"], ops.int32), rows)
  jittered = ops.gather_rows(x, rows)
  for step in range(4):
    op = order[:, step][:, None, None, None]
    gray = _gray(ops, jittered)
    mean = ops.mean(gray, axis=(1, 2, 3), keepdims=True)
    jittered = ops.where(
        op == 0, ops.clip(jittered * factors[..., 0], 0.0, 1.0),
        ops.where(op == 1, _blend(ops, jittered, mean, factors[..., 1]),
                  ops.where(op == 2, _blend(ops, jittered, gray,
                                            factors[..., 2]),
                            jittered)))
    hue_rows = ops.select_rows(order[:, step] == 3)
    hued = _adjust_hue(ops, ops.gather_rows(jittered, hue_rows),
                       ops.gather_rows(factors[..., 3], hue_rows))
    jittered = ops.scatter_rows(jittered, hue_rows, hued)
  return ops.scatter_rows(x, rows, jittered)


def _to_uint8(ops, x):
  """[0, 1] floats -> uint8 with rounding."""
  return ops.cast(ops.round(ops.clip(x, 0.0, 1.0) * 255.0), ops.uint8)


def _render(ops, pyramid, atlas, params):
  pixels = _sample_pyramid(ops, pyramid, atlas, params)
  return _to_uint8(ops, _color_jitter(ops, pixels, params))


def _augment(ops, patches, affine):
  """Bilinear resampling of patches [B, P, P, 3] with zero fill."""
  size = patches.shape[1]
  x, y = _apply_affine(ops.cast(affine, ops.float32), *_pixel_grid(ops, size))
  inside = (x > -0.5) & (x < size - 0.5) & (y > -0.5) & (y < size - 0.5)
  batch = ops.num_rows(patches)
  offset = ops.arange(batch, dtype=ops.int32) * size * size
  sizes = ops.full(batch, size, ops.int32)
  indices, weights = _bilinear_taps(ops, x, y, offset, sizes, sizes)
  flat = ops.reshape(ops.cast(patches, ops.float32), [-1, 3])
  pixels = ops.sum(ops.take(flat, indices) * weights[..., None], axis=-2)
  pixels = pixels * ops.cast(inside, ops.float32)[..., None]
  return ops.cast(ops.round(pixels), ops.uint8)


class Renderer(abc.ABC):
  """Patches of one image and the distillation augmentation, on one backend.

  Calling it renders patches; `augment` resamples patches; `make_batch` does
  both for one step's inputs and `batches` streams them. Arrays are the
  backend's (tf tensors or jax arrays), except `render_numpy`'s.
  """

  def __init__(self, ops: array_ops.Ops, image: np.ndarray | None,
               patch_size: int):
    self.patch_size = patch_size
    self._ops = ops
    self._pyramid = (None if image is None
                     else patch_params.build_pyramid(image, patch_size))

  def __call__(self, params: Mapping[str, Any]) -> Any:
    """Renders patches.

    Args:
      params: rows of `patch_params.sample_patch_params` as
        `patch_params.render_params` converts them (numpy or this backend's
        arrays); other keys are ignored.

    Returns:
      uint8 [B, P, P, 3].
    """
    if self._pyramid is None:
      raise ValueError("This renderer was made without a source image; it "
                       "can only augment.")
    return self._render(params)

  @abc.abstractmethod
  def _render(self, params: Mapping[str, Any]) -> Any:
    """`__call__` of a renderer with a source image."""

  @abc.abstractmethod
  def augment(self, patches: Any, affine: Any) -> Any:
    """Distillation-time augmentation: bilinear resampling with zero fill.

    Args:
      patches: uint8 [B, P, P, 3].
      affine: [B, 2, 3] from `augment.sample_augment_affine`: output pixel
        (u, v, 1) -> input pixel index (x, y). Inputs outside the patch are 0.

    Returns:
      uint8 [B, P, P, 3].
    """

  @abc.abstractmethod
  def render_numpy(self, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Renders the raw rows of `patch_params.sample_patch_params` to numpy."""

  def make_batch(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """One step's batch from its inputs.

    Args:
      inputs: render params or ready uint8 'patches'; optional
        'augment_affine' (then the patches are augmented) and 'label'.

    Returns:
      {'image': uint8 [B, P, P, 3]} plus 'label' when the inputs have it.
    """
    if "patches" in inputs:
      patches = self._ops.asarray(inputs["patches"])
    else:
      patches = self(inputs)
    if "augment_affine" in inputs:
      patches = self.augment(patches, inputs["augment_affine"])
    batch = {"image": patches}
    if "label" in inputs:
      batch["label"] = inputs["label"]
    return batch

  @abc.abstractmethod
  def batches(self, load: Callable[[int], dict[str, np.ndarray]],
              start_step: int, *, num_parallel_calls: int,
              prefetch: int) -> Iterator[dict[str, Any]]:
    """`make_batch(load(step))` for step = start_step, start_step + 1, ...

    Args:
      load: numpy inputs of a step (same keys, dtypes and shapes every step).
      start_step: the first step.
      num_parallel_calls: parallel steps in flight (tf.data); -1 = autotune.
      prefetch: batches prepared ahead (tf.data).

    Returns:
      An endless iterator of batches; 'image' is numpy for tf, a jax array
      for jax; 'label' is numpy.
    """


@BACKENDS.register("tf")
class _TfRenderer(Renderer):
  """tf ops, eager or traced into tf.data map functions."""

  def __init__(self, image: np.ndarray | None, patch_size: int):
    tf = input_pipeline.import_tensorflow()
    super().__init__(array_ops.TF_OPS, image, patch_size)
    self._atlas = None
    if self._pyramid is not None:  # A constant, converted once.
      self._atlas = tf.constant(self._pyramid.atlas, tf.float32)
    self._render_graph = tf.function(self.__call__)

  def _render(self, params):
    return _render(self._ops, self._pyramid, self._atlas, params)

  def augment(self, patches, affine):
    return _augment(self._ops, patches, affine)

  def render_numpy(self, params):
    return self._render_graph(patch_params.render_params(params)).numpy()

  def batches(self, load, start_step, *, num_parallel_calls, prefetch):
    tf = input_pipeline.import_tensorflow()
    example = load(start_step)
    keys = sorted(example)

    def inputs_of_step(step):
      inputs = load(int(step))
      return [inputs[k] for k in keys]

    def load_step(step):
      # A numpy_function over step numbers rather than Dataset.from_generator:
      # a generator dataset's finaliser can abort the interpreter at exit.
      values = tf.numpy_function(
          inputs_of_step, [step],
          [tf.as_dtype(example[k].dtype) for k in keys], stateful=False)
      for key, value in zip(keys, values):
        value.set_shape(example[key].shape)
      return dict(zip(keys, values))

    parallel = (tf.data.AUTOTUNE if num_parallel_calls == -1
                else num_parallel_calls)
    dataset = tf.data.Dataset.range(start_step, 2**62)
    dataset = dataset.map(load_step, deterministic=True,
                          num_parallel_calls=parallel)
    dataset = dataset.map(self.make_batch, deterministic=True,
                          num_parallel_calls=parallel)
    return dataset.prefetch(prefetch).as_numpy_iterator()


@BACKENDS.register("jax")
class _JaxRenderer(Renderer):
  """jitted jax.numpy on the default device; no TensorFlow."""

  def __init__(self, image: np.ndarray | None, patch_size: int):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    super().__init__(array_ops.JAX_OPS, image, patch_size)
    ops, pyramid = self._ops, self._pyramid
    # The atlas is an argument, not a constant baked into the program.
    self._atlas = (None if pyramid is None
                   else jnp.asarray(pyramid.atlas, jnp.float32))
    self._render_jit = jax.jit(
        lambda atlas, params: _render(ops, pyramid, atlas, params))
    self._augment_jit = jax.jit(
        lambda patches, affine: _augment(ops, patches, affine))

  def _render(self, params):
    return self._render_jit(
        self._atlas, {k: params[k] for k in patch_params.RENDER_KEYS})

  def augment(self, patches, affine):
    return self._augment_jit(patches, affine)

  def render_numpy(self, params):
    return np.asarray(self(patch_params.render_params(params)))

  def batches(self, load, start_step, *, num_parallel_calls, prefetch):
    del num_parallel_calls, prefetch  # tf.data's; jax renders in this thread.
    first = load(start_step)  # Bad inputs fail here, not at the first next().
    steps = itertools.count(start_step + 1)
    return map(self.make_batch, itertools.chain([first], map(load, steps)))


def make_renderer(backend: str, image: np.ndarray | None,
                  patch_size: int) -> Renderer:
  """The renderer of one backend for patches of one image.

  Args:
    backend: a name in BACKENDS ('tf' or 'jax').
    image: uint8 [H, W, 3] source image; None for a renderer that only
      augments ready patches (a patch cache, noise inputs, dataset images).
    patch_size: P.

  Returns:
    The Renderer.

  Raises:
    ValueError: `backend` is not registered.
  """
  if backend not in BACKENDS:
    raise ValueError(f"Unknown input backend '{backend}'; known: "
                     f"{', '.join(BACKENDS.names())}.")
  return BACKENDS.get(backend)(image, patch_size)
