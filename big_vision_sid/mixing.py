"""Batch mixing (CutMix / MixUp) applied inside the jitted train step.

In distillation the teacher labels whatever the student sees, so mixing needs
no label bookkeeping: the mixed batch goes to both networks. Partners are the
batch rolled by one along axis 0, and one mixing coefficient / box is drawn
per step for the whole (global) batch. Everything is static-shaped jnp, so a
step compiles once whatever box is drawn.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from big_vision_sid.registry import Registry

MIXERS = Registry("mixing")


class CutmixBox(NamedTuple):
  """A box [top, bottom) x [left, right) in pixels and its mixing lambda."""
  lam: jnp.ndarray
  top: jnp.ndarray
  bottom: jnp.ndarray
  left: jnp.ndarray
  right: jnp.ndarray


def mix_images(
    rng: jax.Array, images: jnp.ndarray, mode: str, alpha: float
) -> jnp.ndarray:
  """Mixes a float [B, H, W, C] batch with the mixer registered as `mode`.

  Args:
    rng: PRNG key; one draw per call, shared by the whole batch.
    images: float images [B, H, W, C].
    mode: `none`, `cutmix`, `mixup` or `cutmix_or_mixup` (static).
    alpha: Beta(alpha, alpha) concentration of the mixing coefficient.

  Returns:
    The mixed images, same shape and dtype.
  """
  mixer = MIXERS.get(mode)
  if images.ndim != 4:
    raise ValueError(f"mix_images expects images [B, H, W, C], got shape "
                     f"{images.shape}.")
  return mixer(rng, images, alpha)


def _check_alpha(alpha: float) -> None:
  # A traced alpha cannot be checked here; configs pass Python floats.
  if isinstance(alpha, (int, float)) and alpha <= 0:
    raise ValueError(f"Mixing needs alpha > 0 for Beta(alpha, alpha), got "
                     f"{alpha}.")


def _partners(images: jnp.ndarray) -> jnp.ndarray:
  return jnp.roll(images, 1, axis=0)


@MIXERS.register("none")
def no_mixing(rng: jax.Array, images: jnp.ndarray, alpha: float) -> jnp.ndarray:
  """Returns the images unchanged."""
  del rng, alpha
  return images


def sample_cutmix_box(
    rng: jax.Array, height: int, width: int, alpha: float
) -> CutmixBox:
  """Draws lambda ~ Beta(alpha, alpha) and a box of area (1 - lambda) * H * W.

  The box has the image's aspect ratio, a centre uniform over the image, and
  is clipped to the image (so clipped boxes cover less than 1 - lambda).
  Edges are rounded to whole pixels.

  Args:
    rng: PRNG key.
    height: image height H.
    width: image width W.
    alpha: Beta concentration, > 0.

  Returns:
    The CutmixBox with int32 edges.
  """
  _check_alpha(alpha)
  rng_lam, rng_y, rng_x = jax.random.split(rng, 3)
  lam = jax.random.beta(rng_lam, alpha, alpha)
  side_fraction = jnp.sqrt(1.0 - lam)
  centre_y = jax.random.uniform(rng_y, (), maxval=height)
  centre_x = jax.random.uniform(rng_x, (), maxval=width)
  half_h = 0.5 * height * side_fraction
  half_w = 0.5 * width * side_fraction

  def edge(value, size):
    return jnp.round(jnp.clip(value, 0, size)).astype(jnp.int32)

  return CutmixBox(
      lam=lam,
      top=edge(centre_y - half_h, height),
      bottom=edge(centre_y + half_h, height),
      left=edge(centre_x - half_w, width),
      right=edge(centre_x + half_w, width),
  )


def box_mask(box: CutmixBox, height: int, width: int) -> jnp.ndarray:
  """Bool [H, W] mask of the box, built from iotas (no dynamic shapes)."""
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return ((rows >= box.top) & (rows < box.bottom)
          & (cols >= box.left) & (cols < box.right))


@MIXERS.register("cutmix")
def cutmix(rng: jax.Array, images: jnp.ndarray, alpha: float) -> jnp.ndarray:
  """Pastes one box from the rolled batch into every image."""
  _, height, width, _ = images.shape
  box = sample_cutmix_box(rng, height, width, alpha)
  mask = box_mask(box, height, width)[None, :, :, None]
  return jnp.where(mask, _partners(images), images)


@MIXERS.register("mixup")
def mixup(rng: jax.Array, images: jnp.ndarray, alpha: float) -> jnp.ndarray:
  """Returns lam * x + (1 - lam) * roll(x), lam ~ Beta(alpha, alpha)."""
  _check_alpha(alpha)
  lam = jax.random.beta(rng, alpha, alpha).astype(images.dtype)
  return lam * images + (1 - lam) * _partners(images)


@MIXERS.register("cutmix_or_mixup")
def cutmix_or_mixup(
    rng: jax.Array, images: jnp.ndarray, alpha: float
) -> jnp.ndarray:
  """Each call applies CutMix or MixUp with probability 1/2 each."""
  rng_choice, rng_mix = jax.random.split(rng)
  use_cutmix = jax.random.bernoulli(rng_choice, 0.5)
  return jax.lax.cond(
      use_cutmix,
      lambda x: cutmix(rng_mix, x, alpha),
      lambda x: mixup(rng_mix, x, alpha),
      images)
