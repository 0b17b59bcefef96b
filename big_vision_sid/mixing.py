"""Batch mixing (CutMix / MixUp) applied inside the jitted train step.

In distillation the teacher labels whatever the student sees, so mixing needs
no label bookkeeping: the mixed batch goes to both networks. Each example is
mixed with a partner from the same batch (`PARTNERS`: the batch rolled by one,
reversed as in the paper's CIFAR code, or randomly permuted as in its ImageNet
code), and one mixing coefficient / box is drawn per step for the whole
(global) batch. Inputs are [B, H, W, ...] (images, spectrograms): a CutMix
box spans axes 1 and 2 and all trailing axes; video clips [B, T, H, W, C]
(5-D) take the box over height and width (axes 2 and 3) in every frame. The
paper's video code draws it over time and height instead (its rand_bbox
reads sizes 2 and 3 of an NCTHW batch as W and H), a bug not reproduced.
Everything is static-shaped jnp, so a step compiles once whatever box is
drawn.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from big_vision_sid.registry import Registry

MIXERS = Registry("mixing")
# Each entry maps (rng, batch) -> the batch of partners, row i for example i.
PARTNERS = Registry("mixing partner")


class CutmixBox(NamedTuple):
  """A box [top, bottom) x [left, right) in pixels and its mixing lambda."""
  lam: jnp.ndarray
  top: jnp.ndarray
  bottom: jnp.ndarray
  left: jnp.ndarray
  right: jnp.ndarray


def mix_images(
    rng: jax.Array, images: jnp.ndarray, mode: str, alpha: float,
    partner: str = "roll",
) -> jnp.ndarray:
  """Mixes a float [B, H, W, ...] batch with the mixer registered as `mode`.

  Args:
    rng: PRNG key; one draw per call, shared by the whole batch.
    images: float inputs [B, H, W, ...].
    mode: `none`, `cutmix`, `mixup` or `cutmix_or_mixup` (static).
    alpha: Beta(alpha, alpha) concentration of the mixing coefficient.
    partner: a `PARTNERS` name: `roll`, `reverse` or `permutation` (static).

  Returns:
    The mixed inputs, same shape and dtype.
  """
  mixer = MIXERS.get(mode)
  pick_partners = PARTNERS.get(partner)
  if images.ndim < 3:
    raise ValueError(f"mix_images expects inputs [B, H, W, ...], got shape "
                     f"{images.shape}.")
  # The mixer's own draws keep `rng`; a permutation draws from a folded key.
  partners = lambda x: pick_partners(jax.random.fold_in(rng, 1), x)
  return mixer(rng, images, alpha, partners)


def _check_alpha(alpha: float) -> None:
  # A traced alpha cannot be checked here; configs pass Python floats.
  if isinstance(alpha, (int, float)) and alpha <= 0:
    raise ValueError(f"Mixing needs alpha > 0 for Beta(alpha, alpha), got "
                     f"{alpha}.")


@PARTNERS.register("roll")
def _rolled(rng: jax.Array, images: jnp.ndarray) -> jnp.ndarray:
  del rng
  return jnp.roll(images, 1, axis=0)


@PARTNERS.register("reverse")
def _reversed(rng: jax.Array, images: jnp.ndarray) -> jnp.ndarray:
  del rng
  return images[::-1]


@PARTNERS.register("permutation")
def _permuted(rng: jax.Array, images: jnp.ndarray) -> jnp.ndarray:
  return jax.random.permutation(rng, images, axis=0)


Partners = Callable[[jnp.ndarray], jnp.ndarray]


@MIXERS.register("none")
def no_mixing(rng: jax.Array, images: jnp.ndarray, alpha: float,
              partners: Partners) -> jnp.ndarray:
  """Returns the images unchanged."""
  del rng, alpha, partners
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


# Rank of a batch of clips [B, T, H, W, C], whose box spans H and W.
CLIP_NDIM = 5


@MIXERS.register("cutmix")
def cutmix(rng: jax.Array, images: jnp.ndarray, alpha: float,
           partners: Partners) -> jnp.ndarray:
  """Pastes one box from the partners into every input.

  The box spans axes 1 and 2 of [B, H, W, ...] inputs, and height and width
  (axes 2 and 3) of clips [B, T, H, W, C], the same in every frame -- not
  time and height as in the paper's video code (see the module docstring).
  """
  first = 2 if images.ndim == CLIP_NDIM else 1
  height, width = images.shape[first:first + 2]
  box = sample_cutmix_box(rng, height, width, alpha)
  mask = box_mask(box, height, width).reshape(
      (1,) * first + (height, width) + (1,) * (images.ndim - first - 2))
  return jnp.where(mask, partners(images), images)


@MIXERS.register("mixup")
def mixup(rng: jax.Array, images: jnp.ndarray, alpha: float,
          partners: Partners) -> jnp.ndarray:
  """Returns lam * x + (1 - lam) * partners(x), lam ~ Beta(alpha, alpha)."""
  _check_alpha(alpha)
  lam = jax.random.beta(rng, alpha, alpha).astype(images.dtype)
  return lam * images + (1 - lam) * partners(images)


@MIXERS.register("cutmix_or_mixup")
def cutmix_or_mixup(
    rng: jax.Array, images: jnp.ndarray, alpha: float, partners: Partners
) -> jnp.ndarray:
  """Each call applies CutMix or MixUp with probability 1/2 each."""
  rng_choice, rng_mix = jax.random.split(rng)
  use_cutmix = jax.random.bernoulli(rng_choice, 0.5)
  return jax.lax.cond(
      use_cutmix,
      lambda x: cutmix(rng_mix, x, alpha, partners),
      lambda x: mixup(rng_mix, x, alpha, partners),
      images)
