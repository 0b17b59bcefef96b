"""The patch renderer and the distillation augmentation, for tf and for jax.

See `patch_params` for the parameter layout. Each output pixel maps through
one affine to the source image, is sampled trilinearly from the two mip
levels around log2(zoom) (antialiasing like a filtered resize at O(P^2) cost
per patch, whatever the crop size), set to 0 where RandomAffine would
fill and rounded to levels; then the colour jitter runs, each op's output
rounded to levels like the official chain's PIL images. Everything is
vectorised over the batch; a patch renders to the same bits in any batch.

The math is written once against an `ops.Ops` of array primitives and
compiled by XLA stage by stage (`_render_stages`): backend 'tf' in tf.data
workers (CPU, tf.function with jit_compile), backend 'jax' jitted on the
default device, for hosts without TensorFlow. The two agree to float
rounding, not bit for bit. `make_renderer` is the one way to get a renderer.
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
# Output pixels rendered per compiled call on CPUs: 8 patches of 224 px.
_CACHE_PIXELS = 8 * 224 * 224


def _pixel_grid(ops: array_ops.Ops, size: int) -> tuple[Any, Any]:
  v, u = ops.meshgrid(ops.arange(size, dtype=ops.float32),
                      ops.arange(size, dtype=ops.float32), indexing="ij")
  return u, v


def _apply_affine(affine, u, v):
  """affine [B, 2, 3], grid [P, P] -> x, y [B, P, P]."""
  a = affine[:, :, :, None, None]
  return (a[:, 0, 0] * u + a[:, 0, 1] * v + a[:, 0, 2],
          a[:, 1, 0] * u + a[:, 1, 1] * v + a[:, 1, 2])


def _bilinear_weights(ax, ay):
  """Weights of the taps (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)
  for fractions ax, ay."""
  return [(1 - ay) * (1 - ax), (1 - ay) * ax, ay * (1 - ax), ay * ax]


def _bilinear_taps(ops, x, y, offset, height, width):
  """Flat table indices and weights of bilinear sampling: 4 [B, P, P] each."""
  x_floor, y_floor = ops.floor(x), ops.floor(y)
  width = ops.cast(width, ops.int32)[:, None, None]
  height = ops.cast(height, ops.int32)[:, None, None]
  x0 = ops.cast(x_floor, ops.int32)
  y0 = ops.cast(y_floor, ops.int32)
  xs = [ops.clip(x0 + d, 0, width - 1) for d in (0, 1)]
  ys = [ops.clip(y0 + d, 0, height - 1) for d in (0, 1)]
  base = ops.cast(offset, ops.int32)[:, None, None]
  indices = [base + ys[j] * width + xs[i] for j in (0, 1) for i in (0, 1)]
  return indices, _bilinear_weights(x - x_floor, y - y_floor)


# The per-pixel math below works on planar images: a list of three [B, P, P]
# float planes (R, G, B). XLA vectorises elementwise loops over contiguous
# planes; with channels as a minor axis of 3 the same math ran several times
# slower (benchmarks/README.md).


def _from_texels(ops, texels):
  """int32 texels -> three float planes in [0, 255]."""
  mask = (1 << patch_params.TEXEL_BITS) - 1
  return [ops.cast(ops.bitwise_and(ops.right_shift(
      texels, c * patch_params.TEXEL_BITS), mask), ops.float32) *
          (1.0 / patch_params.TEXEL_SCALE) for c in range(3)]


def _interpolate(ops, table, unpack, indices, weights):
  """sum_k weights[k] * table[indices[k]] as three float planes in [0, 255].

  The table holds one int32 per pixel (atlas texels or pixel words, as
  `unpack` reads them): one scalar gather per tap.
  """
  planes = [0.0, 0.0, 0.0]
  for index, weight in zip(indices, weights):
    for c, value in enumerate(unpack(ops, ops.take(table, index))):
      planes[c] = planes[c] + weight * value
  return planes


def _to_words(ops, planes):
  """Planes of integer levels in [0, 255] -> int32 pixel words [B, P, P].

  A word is R | G << 8 | B << 16: bitcast to bytes it is the pixel's uint8
  RGB plus a zero byte, so words and uint8 patches convert by a bitcast,
  without interleaving three planes.
  """
  words = None
  for c, plane in enumerate(planes):
    field = ops.cast(plane, ops.int32)
    field = ops.left_shift(field, 8 * c) if c else field
    words = field if words is None else ops.bitwise_or(words, field)
  return words


def _from_words(ops, words):
  """int32 pixel words -> three float planes of integer levels."""
  return [ops.cast(ops.bitwise_and(ops.right_shift(words, 8 * c), 255),
                   ops.float32) for c in range(3)]


def _words_to_uint8(ops, words):
  """int32 pixel words [B, P, P] -> uint8 [B, P, P, 3] (little-endian)."""
  return ops.bitcast(words, ops.uint8)[..., :3]


def _uint8_to_words(ops, patches):
  """uint8 [B, P, P, 3] -> int32 pixel words [B, P, P]."""
  zeros = ops.cast(patches[..., :1], ops.uint8) * 0
  return ops.bitcast(ops.concat([patches, zeros], axis=-1), ops.int32)


def _pyramid_taps(ops, pyramid, params):
  """Trilinear mip taps, per level of the two: the atlas index of the top-left
  tap, the fractions ax, ay and the level's weight; 8 [B, P, P] arrays.

  `_pyramid_sample` expands them to 8 taps. The level weight is 0 where
  RandomAffine fills.
  """
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
  blend = (level - ops.cast(level0, ops.float32))[:, None, None]
  first_rows = ops.asarray(pyramid.first_rows, ops.int32)
  heights = ops.asarray(pyramid.heights, ops.int32)
  widths = ops.asarray(pyramid.widths, ops.int32)
  mask = ops.cast(inside, ops.float32)
  taps = []
  for lvl, level_weight in ((level0, 1.0 - blend), (level1, blend)):
    inv_scale = ops.power(2.0, -ops.cast(lvl, ops.float32))[:, None, None]
    x = (src_x + 0.5) * inv_scale - 0.5
    y = (src_y + 0.5) * inv_scale - 0.5
    x_floor, y_floor = ops.floor(x), ops.floor(y)
    width = ops.take(widths, lvl)[:, None, None]
    height = ops.take(heights, lvl)[:, None, None]
    corner_x = ops.clip(ops.cast(x_floor, ops.int32), -1, width - 1)
    corner_y = ops.clip(ops.cast(y_floor, ops.int32), -1, height - 1)
    first_row = ops.take(first_rows, lvl)[:, None, None]
    corner = (first_row + corner_y + 1) * pyramid.stride + corner_x + 1
    taps += [corner, x - x_floor, y - y_floor, level_weight * mask]
  return taps


def _pyramid_sample(ops, pyramid, atlas, taps):
  """The 8 weighted taps of `_pyramid_taps` -> three float planes."""
  indices, weights = [], []
  for level in range(2):
    corner, ax, ay, level_weight = taps[4 * level:4 * level + 4]
    indices += [corner + d for d in (0, 1, pyramid.stride, pyramid.stride + 1)]
    weights += [w * level_weight for w in _bilinear_weights(ax, ay)]
  return _interpolate(ops, atlas, _from_texels, indices, weights)


def _mod(ops, x, n):
  # x - n floor(x / n): XLA:CPU's floating-point remainder is a scalar libm
  # call per element (~8x slower); this is exact for the hue's n = 1 and 6.
  return x - n * ops.floor(x / n)


def _gray(ops, planes):
  return sum(w * c for w, c in zip(_GRAY_WEIGHTS, planes))


def _gray_mean(ops, planes):
  """Mean gray level over [P, P] of quarter-integer planes -> [B, 1, 1].

  The per-channel sums are exact int32 sums, so the mean does not depend on
  how XLA orders a float reduction for a given batch shape, and a patch
  renders to the same bits in any batch.
  """
  size = planes[0].shape[1] * planes[0].shape[2]
  mean = 0.0
  for weight, plane in zip(_GRAY_WEIGHTS, planes):
    quarters = ops.cast(ops.round(ops.reshape(plane, [-1, size]) * 4.0),
                        ops.int32)
    total = ops.cast(ops.sum(quarters, axis=1), ops.float32)
    mean = mean + weight * total * (0.25 / size)
  return ops.reshape(mean, [-1, 1, 1])


def _round_levels(ops, planes):
  """Rounded to integer levels in [0, 255], as PIL stores each op's output."""
  return [ops.round(ops.clip(c, 0.0, 255.0)) for c in planes]


def _rgb_to_hsv(ops, planes):
  r, g, b = planes
  maxc = ops.maximum(ops.maximum(r, g), b)
  minc = ops.minimum(ops.minimum(r, g), b)
  delta = maxc - minc
  safe_delta = ops.where(delta > 0, delta, 1.0)
  sat = ops.where(maxc > 0, delta / ops.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = [(maxc - c) / safe_delta for c in (r, g, b)]
  hue = ops.where(r == maxc, bc - gc,
                  ops.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  hue = ops.where(delta > 0, _mod(ops, hue / 6.0, 1.0), 0.0)
  return hue, sat, maxc


def _hsv_to_rgb(ops, hue, sat, val):
  # Closed form of the six-sector HSV->RGB: channel n has
  # k = (n + 6 h) mod 6 and c = v - v s clip(min(k, 4 - k), 0, 1).
  chroma = val * sat
  planes = []
  for n in (5.0, 3.0, 1.0):
    k = _mod(ops, n + 6.0 * hue, 6.0)
    planes.append(
        val - chroma * ops.clip(ops.minimum(k, 4.0 - k), 0.0, 1.0))
  return planes


def _adjust_hue(ops, planes, shift):
  """Shifts the hue of planes [B, H, W] by shift [B, 1, 1] (in turns)."""
  hue, sat, val = _rgb_to_hsv(ops, planes)
  return _hsv_to_rgb(ops, _mod(ops, hue + shift, 1.0), sat, val)


def _jitter_step(ops, planes, params, step, active):
  """Step `step` of the jitter order on the rows where `active` [B] holds.

  Brightness, contrast and saturation are all clip(a x + g gray + m mean)
  with per-row (a, g, m); inactive rows get (1, 0, 0), so one formula serves
  every row without a per-row branch. Planes are levels in [0, 255]; the
  output is rounded to integer levels.
  """
  op = ops.cast(params["jitter_order"], ops.int32)[:, step]
  factors = ops.cast(params["jitter_factors"], ops.float32)
  factor = ops.sum(factors * ops.cast(
      op[:, None] == ops.arange(4, dtype=ops.int32)[None, :], ops.float32),
                   axis=-1)
  active = active & ops.cast(params["jitter_apply"], ops.bool_) & (op < 3)
  def coefficient(value, default):
    return ops.where(active, value, default)[:, None, None]
  scale = coefficient(factor, 1.0)
  to_gray = coefficient(ops.where(op == 2, 1.0 - factor, 0.0), 0.0)
  to_mean = coefficient(ops.where(op == 1, 1.0 - factor, 0.0), 0.0)
  offset = to_gray * _gray(ops, planes) + to_mean * _gray_mean(ops, planes)
  return _round_levels(ops, [scale * c + offset for c in planes])


def _hue_step(ops, params):
  """Position of hue in each row's jitter order, [B] int32."""
  order = ops.cast(params["jitter_order"], ops.int32)
  return ops.sum(ops.cast(order == 3, ops.int32) *
                 ops.arange(4, dtype=ops.int32)[None, :], axis=-1)


def _linear_jitter(ops, words, params, step, before_hue):
  """Step `step` of each row's jitter order where it is a linear op on the
  side of hue that `before_hue` says; pixel words in and out."""
  hue_step = _hue_step(ops, params)
  active = step < hue_step if before_hue else step > hue_step
  return _to_words(ops, _jitter_step(ops, _from_words(ops, words), params,
                                     step, active))


def _hue_jitter(ops, words, params):
  """The hue shift (0 on rows without jitter); pixel words in and out."""
  shift = ops.where(ops.cast(params["jitter_apply"], ops.bool_),
                    ops.cast(params["jitter_factors"], ops.float32)[:, 3], 0.0)
  return _to_words(ops, _round_levels(ops, _adjust_hue(
      ops, _from_words(ops, words), shift[:, None, None])))


# torchvision's ColorJitter sequence (op order and apply flag per patch) as
# stages: the linear ops before hue (row r's step s runs in the step-s stage
# if s < its hue position), the hue shift, the linear ops after hue. Hue
# runs once per pixel; rows without jitter round-trip exactly.
_LINEAR_JITTER_STAGES = {  # name: (step, before_hue)
    **{f"jitter{step}_before_hue": (step, True) for step in range(3)},
    **{f"jitter{step}_after_hue": (step, False) for step in range(1, 4)}}
JITTER_STAGES = (*list(_LINEAR_JITTER_STAGES)[:3], "hue",
                 *list(_LINEAR_JITTER_STAGES)[3:])


def _augment_taps(ops, words, affine):
  """Bilinear taps into patches (as pixel words [B, P, P]), zero fill."""
  size = words.shape[1]
  x, y = _apply_affine(ops.cast(affine, ops.float32), *_pixel_grid(ops, size))
  inside = ops.cast(
      (x > -0.5) & (x < size - 0.5) & (y > -0.5) & (y < size - 0.5),
      ops.float32)
  batch = ops.num_rows(words)
  offset = ops.arange(batch, dtype=ops.int32) * size * size
  sizes = ops.full(batch, size, ops.int32)
  indices, weights = _bilinear_taps(ops, x, y, offset, sizes, sizes)
  return indices, [w * inside for w in weights]


def _render_stages(ops, pyramid):
  """The render and the augmentation as functions compiled one by one.

  The stage boundaries keep XLA from fusing an expensive producer into each
  of its consumers, or the index math into the (scalar) gather loops:
  compiled as one program, the same math ran ~4x slower. Stages pass lists
  of [B, P, P] arrays (tap indices and weights, pixel words): stacked,
  XLA:CPU spent more time concatenating them than computing them. Each
  jitter step is a stage because contrast needs the mean of its input: in
  one program XLA recomputed the steps before for each mean (~2.5x slower).

  Returns:
    A dict of the stage functions.
  """
  def pyramid_taps(params):
    return _pyramid_taps(ops, pyramid, params)

  def sample(atlas, *taps):
    # One packed output: XLA:CPU otherwise reads the tap arrays once per
    # output plane.
    # Rounded to levels like the official chain's uint8 PIL images.
    return _to_words(ops, _round_levels(
        ops, _pyramid_sample(ops, pyramid, atlas, taps)))

  def jitter_stage(step, before_hue):
    return lambda words, params: _linear_jitter(ops, words, params, step,
                                                before_hue)

  jitter = {name: jitter_stage(*step) for name, step
            in _LINEAR_JITTER_STAGES.items()}
  jitter["hue"] = lambda words, params: _hue_jitter(ops, words, params)

  def augment_taps(words, affine):
    return _augment_taps(ops, words, affine)

  def augment_sample(words, indices, weights):
    return _to_words(ops, _round_levels(
        ops, _interpolate(ops, ops.reshape(words, [-1]), _from_words, indices,
                     weights)))

  def to_words(patches):
    return _uint8_to_words(ops, patches)

  def to_uint8(words):
    return _words_to_uint8(ops, words)

  return dict(pyramid_taps=pyramid_taps, sample=sample,
              **{name: jitter[name] for name in JITTER_STAGES},
              augment_taps=augment_taps,
              augment_sample=augment_sample, to_words=to_words,
              to_uint8=to_uint8)


class Renderer(abc.ABC):
  """Patches of one image and the distillation augmentation, on one backend.

  Calling it renders patches; `augment` resamples patches; `make_batch` does
  both for one step's inputs and `batches` streams them. Arrays are the
  backend's (tf tensors or jax arrays), except `render_numpy`'s.
  """

  def __init__(self, ops: array_ops.Ops, image: np.ndarray | None,
               patch_size: int, compile_fn: Callable[[Callable], Callable],
               to_device: Callable[[np.ndarray], Any], chunk_pixels: int):
    """Builds the pyramid and compiles the stages.

    Args:
      ops: the backend's array primitives.
      image: uint8 [H, W, 3], or None for a renderer that only augments.
      patch_size: P.
      compile_fn: compiles a function of arrays (tf.function with XLA,
        jax.jit).
      to_device: converts the atlas once; it is an argument of the compiled
        sampler, not a constant baked into the program.
      chunk_pixels: output pixels rendered per compiled call (`_by_chunks`);
        0 renders whole batches.
    """
    self._chunk_pixels = chunk_pixels
    self.patch_size = patch_size
    self._ops = ops
    self._pyramid = (None if image is None
                     else patch_params.build_pyramid(image, patch_size))
    self._atlas = (None if self._pyramid is None
                   else to_device(self._pyramid.atlas))
    self._stages = {name: compile_fn(stage) for name, stage
                    in _render_stages(ops, self._pyramid).items()}

  def __call__(self, params: Mapping[str, Any]) -> Any:
    """Renders patches.

    Args:
      params: rows of `patch_params.sample_patch_params` as
        `patch_params.render_params` converts them (numpy or this backend's
        arrays); other keys are ignored.

    Returns:
      uint8 [B, P, P, 3].
    """
    return self._stages["to_uint8"](self._render_words(params))

  def _render_words(self, params: Mapping[str, Any]) -> Any:
    if self._pyramid is None:
      raise ValueError("This renderer was made without a source image; it "
                       "can only augment.")
    stage = self._stages

    def render_rows(rows):
      words = stage["sample"](self._atlas, *stage["pyramid_taps"](rows))
      for name in JITTER_STAGES:
        words = stage[name](words, rows)
      return words

    return self._by_chunks(
        render_rows, {k: params[k] for k in patch_params.RENDER_KEYS})

  def _by_chunks(self, fn: Callable[[dict[str, Any]], Any],
                 arrays: dict[str, Any]) -> Any:
    """fn over chunks of rows of `arrays`, concatenated.

    A chunk's intermediates (a few dozen [rows, P, P] arrays) then stay in
    the CPU's last-level cache between stages: at P = 224, chunks of 8 rows
    rendered ~1.8x faster than whole batches of 32. Accelerators render
    whole batches (one launch per stage).
    """
    num = int(arrays["zoom"].shape[0])
    chunk = max(1, self._chunk_pixels // (self.patch_size * self.patch_size))
    if not self._chunk_pixels or num <= chunk:
      return fn(arrays)
    return self._ops.concat(
        [fn({k: v[start:start + chunk] for k, v in arrays.items()})
         for start in range(0, num, chunk)], axis=0)

  def augment(self, patches: Any, affine: Any) -> Any:
    """Distillation-time augmentation: bilinear resampling with zero fill.

    Args:
      patches: uint8 [B, P, P, 3].
      affine: [B, 2, 3] from `augment.sample_augment_affine`: output pixel
        (u, v, 1) -> input pixel index (x, y). Inputs outside the patch are 0.

    Returns:
      uint8 [B, P, P, 3].
    """
    return self.make_batch({"patches": patches,
                            "augment_affine": affine})["image"]

  def _augment_words(self, words: Any, affine: Any) -> Any:
    stage = self._stages
    return stage["augment_sample"](words, *stage["augment_taps"](words,
                                                                 affine))

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
    # Patches stay pixel words from the render through the augmentation.
    if "patches" in inputs:
      words = self._stages["to_words"](self._ops.asarray(inputs["patches"]))
    else:
      words = self._render_words(inputs)
    if "augment_affine" in inputs:
      words = self._augment_words(words, inputs["augment_affine"])
    batch = {"image": self._stages["to_uint8"](words)}
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
  """tf ops compiled by XLA, called eagerly or from tf.data map functions.

  XLA fuses the per-pixel math into a few loops; op by op, tf makes one
  pass over the batch per op and rendered 224-px patches several times
  slower.
  """

  def __init__(self, image: np.ndarray | None, patch_size: int):
    tf = input_pipeline.import_tensorflow()
    super().__init__(array_ops.TF_OPS, image, patch_size,
                     lambda fn: tf.function(fn, jit_compile=True),
                     lambda atlas: tf.constant(atlas, tf.int32),
                     _CACHE_PIXELS)
    self._render_graph = tf.function(self.__call__)

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
    super().__init__(array_ops.JAX_OPS, image, patch_size, jax.jit,
                     lambda atlas: jnp.asarray(atlas, jnp.int32),
                     _CACHE_PIXELS if jax.default_backend() == "cpu" else 0)

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
