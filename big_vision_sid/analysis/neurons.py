"""Neuron visualisation by activation maximisation (Fig. 6, 12, 13), Lucid-style.

An image is optimised (Adam, gradient ascent) to maximise one unit of a
network: a class logit, or the spatial mean of one channel of a stage's
output. As in Lucid/Lucent (Olah et al. 2017), the image is not optimised
pixel by pixel but through a parameterisation that favours natural images:

- Fourier: the parameters are a complex spectrum per colour channel, scaled
  by 1 / frequency (a natural image's amplitude falloff), so every frequency
  starts on an equal footing and no high-frequency noise dominates.
- Decorrelated colours: the inverse FFT gives three decorrelated channels,
  mixed into RGB by the square root of the colour covariance of the run's
  own training patches (what the student saw), then squashed into (0, 1) by
  a sigmoid.
- Transformation robustness: each step sees the image under a fresh random
  jitter, scale and rotation (one affine resampling, reflective borders), so
  only features that survive small transforms grow.

Every objective of a network is one image of one batch, optimised together
(inference-mode BatchNorm keeps them independent). Student and teacher are
shown side by side with the same objectives.
"""

import dataclasses
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np
import optax

from big_vision_sid.analysis import common

# Pre-sigmoid values of the initial image stay O(0.1): a grey start.
_SPECTRUM_GAIN = 0.25
_INIT_STD = 0.01
_LEARNING_RATE = 0.05
# Per-step transforms: scale in 1 +- _SCALE, rotation in +-_DEGREES, shifts
# in +-(side / _JITTER_DIVISOR) pixels (2 px at 32 px, Lucid's 8 px at ~224).
_SCALE = 0.1
_DEGREES = 10.0
_JITTER_DIVISOR = 16
# The spectral falloff: amplitude ~ 1 / frequency ** _DECAY_POWER.
_DECAY_POWER = 1.0


def spectrum_scale(height: int, width: int) -> np.ndarray:
  """[H, W // 2 + 1] 1 / frequency (capped at the lowest non-zero one)."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  frequency = np.sqrt(fy ** 2 + fx ** 2)
  return 1.0 / np.maximum(frequency, 1.0 / max(height, width)) ** _DECAY_POWER


def color_decorrelation(pixels: np.ndarray) -> np.ndarray:
  """[3, 3] M with M M^T proportional to the colour covariance of `pixels`.

  Its largest column has unit norm, so the decorrelated channels keep the
  scale of the spectrum; tiny eigenvalues are floored so that M stays
  invertible (a grey source image has rank-1 colours).
  """
  covariance = np.cov(np.asarray(pixels, np.float64).reshape(-1, 3).T)
  u, s, _ = np.linalg.svd(covariance)
  s = np.maximum(s, 1e-3 * s[0] + 1e-12)
  root = u * np.sqrt(s)
  return (root / np.linalg.norm(root, axis=0).max()).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FourierImage:
  """A batch of images parameterised by decorrelated-colour spectra.

  Parameters are float32 [B, 3, H, W // 2 + 1, 2] (real and imaginary part
  of each channel's rfft2).
  """
  height: int
  width: int
  color: np.ndarray  # [3, 3] decorrelated -> RGB (`color_decorrelation`).

  def init(self, rng: jax.Array, batch: int) -> jax.Array:
    shape = (batch, 3, self.height, self.width // 2 + 1, 2)
    return _INIT_STD * jax.random.normal(rng, shape, jnp.float32)

  def _scale(self) -> jax.Array:
    return jnp.asarray(spectrum_scale(self.height, self.width), jnp.float32)

  def to_image(self, params: jax.Array) -> jax.Array:
    """float32 [B, H, W, 3] in (0, 1)."""
    spectrum = jax.lax.complex(params[..., 0], params[..., 1]) * self._scale()
    channels = jnp.fft.irfft2(spectrum, s=(self.height, self.width),
                              norm="ortho") * _SPECTRUM_GAIN
    decorrelated = jnp.moveaxis(channels, 1, -1)
    return jax.nn.sigmoid(decorrelated @ jnp.asarray(self.color).T)

  def from_image(self, images: jax.Array) -> jax.Array:
    """The parameters of images [B, H, W, 3] in (0, 1): `to_image`'s inverse."""
    pre = jax.scipy.special.logit(jnp.clip(images, 1e-6, 1 - 1e-6))
    decorrelated = pre @ jnp.linalg.inv(jnp.asarray(self.color)).T
    channels = jnp.moveaxis(decorrelated, -1, 1) / _SPECTRUM_GAIN
    spectrum = jnp.fft.rfft2(channels, norm="ortho") / self._scale()
    return jnp.stack([spectrum.real, spectrum.imag], axis=-1)


def random_transform(rng: jax.Array, images: jax.Array) -> jax.Array:
  """Each image [B, H, W, C] under its own random scale, rotation and shift."""
  batch, height, width, _ = images.shape
  scale_rng, angle_rng, shift_rng = jax.random.split(rng, 3)
  scales = jax.random.uniform(scale_rng, (batch,), minval=1 - _SCALE,
                              maxval=1 + _SCALE)
  angles = jnp.deg2rad(jax.random.uniform(angle_rng, (batch,),
                                          minval=-_DEGREES, maxval=_DEGREES))
  jitter = max(1.0, max(height, width) / _JITTER_DIVISOR)
  shifts = jax.random.uniform(shift_rng, (batch, 2), minval=-jitter,
                              maxval=jitter)
  centre = jnp.array([(height - 1) / 2, (width - 1) / 2])
  grid = jnp.stack(jnp.meshgrid(jnp.arange(height), jnp.arange(width),
                                indexing="ij")).reshape(2, -1) - centre[:, None]

  def one(image, scale, angle, shift):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    # Output pixel p reads the source at R p / scale + centre + shift.
    source = jnp.array([[cos, -sin], [sin, cos]]) @ grid / scale
    source = source + (centre + shift)[:, None]
    return jnp.stack([
        jax.scipy.ndimage.map_coordinates(image[..., c], list(source), order=1,
                                          mode="reflect").reshape(height, width)
        for c in range(image.shape[-1])], axis=-1)

  return jax.vmap(one)(images, scales, angles, shifts)


@dataclasses.dataclass(frozen=True)
class Objective:
  """Maximise channel `channel` of the output of `layer` (`common.LOGITS` for a
  class logit; a feature map is averaged over space)."""
  layer: str
  channel: int
  label: str


def unit_activations(outputs: dict[str, jax.Array],
                     objectives: list[Objective]) -> jax.Array:
  """[T] activation of objective i on batch image i."""
  values = []
  for i, objective in enumerate(objectives):
    out = outputs[objective.layer][i]
    values.append(out[..., objective.channel].reshape(-1).mean())
  return jnp.stack(values)


def maximize(net: common.Network, objectives: list[Objective],
             parameterization: FourierImage, *, steps: int, seed: int,
             learning_rate: float = _LEARNING_RATE
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Optimises one image per objective.

  Returns:
    images float32 [T, H, W, 3] in (0, 1), the activations [steps, T] seen at
    each step (on the transformed images being optimised), and the final
    activations [T] on the untransformed images.
  """
  names = sorted({o.layer for o in objectives} - {common.LOGITS}) + [common.LOGITS]
  optimizer = optax.adam(learning_rate)

  def activations(params, rng):
    images = parameterization.to_image(params)
    if rng is not None:
      images = random_transform(rng, images)
    outputs = common.capture_layers(net, net.variables, net.normalize(images),
                                    names)
    return unit_activations(dict(zip(names, outputs)), objectives)

  @jax.jit
  def step(params, opt_state, rng):
    def loss(p):
      values = activations(p, rng)
      return -jnp.sum(values), values
    (_, values), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, values

  init_rng, step_rng = jax.random.split(jax.random.key(seed))
  params = parameterization.init(init_rng, len(objectives))
  opt_state = optimizer.init(params)
  history = []
  for i in range(steps):
    params, opt_state, values = step(params, opt_state,
                                     jax.random.fold_in(step_rng, i))
    history.append(values)
  final = jax.jit(lambda p: activations(p, None))(params)
  return (np.asarray(parameterization.to_image(params)),
          np.asarray(jax.device_get(history)), np.asarray(final))


def _stage_ends(names: list[str]) -> list[str]:
  """The last block of each stage (blocks named `<stage>_<index>`)."""
  ends: dict[str, str] = {}
  for name in names:
    if name != common.LOGITS:
      ends[name.rpartition("_")[0] or name] = name
  return list(ends.values())


def objectives_for(net: common.Network, image_shape: tuple[int, ...],
                   class_names: list[str], num_classes: int,
                   channels_per_stage: int, seed: int) -> list[Objective]:
  """The first `num_classes` class logits, then random channels of each stage
  (drawn by seed and stage, so networks of equal width get the same ones)."""
  objectives = [Objective(common.LOGITS, c, class_names[c])
                for c in range(min(num_classes, len(class_names)))]
  stages = _stage_ends(common.layer_names(net, image_shape))
  if channels_per_stage and stages:
    shapes = jax.eval_shape(lambda x: common.capture_layers(
        net, net.variables, x, stages), jnp.zeros((1, *image_shape)))
    for index, (stage, shape) in enumerate(zip(stages, shapes)):
      width = shape.shape[-1]
      rng = np.random.default_rng([seed, index])
      for channel in sorted(rng.choice(width, min(channels_per_stage, width),
                                       replace=False)):
        objectives.append(Objective(stage, int(channel), f"{stage}:{channel}"))
  return objectives


def analyze(context: common.Context) -> common.Section:
  options = context.options
  size = context.config.input.patch_size
  image_shape = (size, size, 3)
  parameterization = FourierImage(size, size,
                                  color_decorrelation(context.patches))
  results: dict[str, Any] = {}
  numbers: dict[str, Any] = {"steps": options.neuron_steps, "image_size": size}
  for net in context.networks:
    objectives = objectives_for(net, image_shape, context.class_names,
                                options.neuron_classes, options.neuron_channels,
                                options.seed)
    start = time.time()
    images, history, final = maximize(net, objectives, parameterization,
                                      steps=options.neuron_steps,
                                      seed=options.seed)
    logging.info("Neurons of %s: %d objectives, %d steps in %.1fs.", net.label,
                 len(objectives), options.neuron_steps, time.time() - start)
    results[net.name] = (objectives, images, final)
    is_class = np.array([o.layer == common.LOGITS for o in objectives])
    probabilities = common.softmax(
        common.predict_logits(net, images, options.batch_size))
    target = np.array([o.channel for o in objectives])
    for kind, rows in (("class", is_class), ("channel", ~is_class)):
      if rows.any():
        numbers[f"{net.name}_{kind}_activation_first_step"] = float(
            history[0, rows].mean())
        numbers[f"{net.name}_{kind}_activation_final"] = float(final[rows].mean())
    if is_class.any():
      numbers[f"{net.name}_class_probability_final"] = float(
          probabilities[is_class, target[is_class]].mean())
    numbers[f"{net.name}_objectives"] = [o.label for o in objectives]
    numbers[f"{net.name}_final_activations"] = final.round(3).tolist()

  figures = []
  for kind, title in (("class", "class logits"), ("channel", "stage channels")):
    panels = {name: [(o, img, value) for o, img, value in zip(*result)
                     if (o.layer == common.LOGITS) == (kind == "class")]
              for name, result in results.items()}
    if not any(panels.values()):
      continue
    figure = _grid(panels, context, title)
    caption = _caption(kind, numbers, context, options.neuron_steps)
    figures.append(context.save_figure(figure, f"neurons_{kind}.png", caption))
  return common.Section("Neuron visualisation", figures, numbers)


def _grid(panels: dict[str, list[tuple[Objective, np.ndarray, float]]],
          context: common.Context, title: str) -> Figure:
  columns = max(len(p) for p in panels.values())
  figure = Figure(figsize=(1.35 * columns + 0.6, 1.65 * len(panels) + 0.5))
  axes = figure.subplots(len(panels), columns, squeeze=False)
  labels = {net.name: net.label for net in context.networks}
  for row, (name, entries) in zip(axes, panels.items()):
    for ax in row:
      ax.set_axis_off()
    for ax, (objective, image, value) in zip(row, entries):
      ax.imshow(common.to_uint8(image), interpolation="nearest")
      ax.set_title(f"{objective.label}\n{value:.1f}", fontsize=7)
    row[0].text(-0.15, 0.5, labels[name], transform=row[0].transAxes,
                rotation=90, ha="right", va="center", fontsize=8)
  figure.suptitle(f"activation maximisation: {title} (value under each image's "
                  "name)", fontsize=9)
  figure.tight_layout()
  return figure


def _caption(kind: str, numbers: dict[str, Any], context: common.Context,
             steps: int) -> str:
  parts = []
  for net in context.networks:
    first = numbers.get(f"{net.name}_{kind}_activation_first_step")
    final = numbers.get(f"{net.name}_{kind}_activation_final")
    if first is None:
      continue
    text = f"{net.name} {first:.2f} -> {final:.2f}"
    if kind == "class":
      text += (f" (target class probability "
               f"{100 * numbers[f'{net.name}_class_probability_final']:.0f}%)")
    parts.append(text)
  what = ("class logits" if kind == "class" else
          "random channels of each stage (spatial mean)")
  return (f"Images maximising {what}, {steps} steps, Fourier/decorrelated "
          f"parameterisation with jitter/scale/rotation; mean activation from "
          f"the first step to the end: {'; '.join(parts)}.")
