"""Source images for single-image distillation, selected by a spec string.

Specs understood by `load_source_image`:

* a file path (`$SID_SHARED_DIR` and `~` are expanded): anything PIL decodes
  (JPEG, PNG, WebP, TIFF, ...). EXIF orientation is applied; grayscale is
  replicated to RGB; 16/32-bit integer images are scaled to 8 bit; an alpha
  channel (RGBA, LA, palette with transparency) is DROPPED, keeping the stored
  colours, exactly like PIL's `convert("RGB")` used by the paper's code.
* `skimage:<name>`: a photo bundled with scikit-image, e.g. `skimage:astronaut`.
* `noise:uniform_image[:HxW]`: one fixed uniform-noise image (seed 0),
  1024x1024 unless a size is given.

Two more specs are not images but per-patch noise INPUTS (paper Table 11):
`noise:uniform` (i.i.d. U[0,1] pixels) and `noise:normal` (N(0.5, 0.25^2)
clipped to [0,1]). `is_noise_input` recognises them and `noise_patches`
generates them deterministically from (seed, patch index).

This module uses PIL and numpy only (no TensorFlow).
"""

import os
import re

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

from big_vision_sid import paths
from input_pipeline import randomness
from input_pipeline.image import patch_params

NOISE_INPUTS = ("noise:uniform", "noise:normal")
_NOISE_IMAGE_RE = re.compile(r"^noise:uniform_image(?::(\d+)x(\d+))?$")
_DEFAULT_NOISE_IMAGE_HW = (1024, 1024)
# Streams of the counter-based hash reserved for per-patch noise inputs.
_NOISE_STREAM_A = 301
_NOISE_STREAM_B = 302


def is_noise_input(spec: str) -> bool:
  """Whether `spec` asks for per-patch random noise instead of image patches."""
  return spec in NOISE_INPUTS


def load_source_image(spec: str) -> np.ndarray:
  """Loads the source image named by `spec` (see module docstring).

  Args:
    spec: a file path, `skimage:<name>` or `noise:uniform_image[:HxW]`.

  Returns:
    uint8 array [H, W, 3].

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: unreadable/corrupt file, unknown skimage name, bad noise spec,
      or a per-patch noise spec (which has no single image).
  """
  if is_noise_input(spec):
    raise ValueError(
        f"Source '{spec}' is per-patch noise, not an image: use noise_patches().")
  if spec.startswith("noise:"):
    return _noise_image(spec)
  if spec.startswith("skimage:"):
    return _skimage_image(spec[len("skimage:"):])
  return _file_image(paths.expand(spec))


def check_image_size(image_hw: tuple[int, int], patch_size: int,
                     initcrop: float) -> None:
  """Raises ValueError if the image or its initial crop is below `patch_size`."""
  height, width = image_hw
  if min(height, width) < patch_size:
    raise ValueError(
        f"Source image {height}x{width} is smaller than the patch size "
        f"{patch_size}.")
  crop = patch_params.initial_crop_size(image_hw, initcrop)
  if crop < patch_size:
    raise ValueError(
        f"Initial crop {crop}x{crop} (initcrop={initcrop} of {height}x{width}) "
        f"is smaller than the patch size {patch_size}.")


def noise_patches(spec: str, seed: int, indices: np.ndarray,
                  patch_size: int) -> np.ndarray:
  """Per-patch noise inputs: patch i is a pure function of (seed, i).

  Args:
    spec: 'noise:uniform' or 'noise:normal'.
    seed: the run's data seed.
    indices: int array [B] of patch indices.
    patch_size: P.

  Returns:
    uint8 [B, P, P, 3].
  """
  if not is_noise_input(spec):
    raise ValueError(f"Unknown noise input '{spec}'; known: {NOISE_INPUTS}.")
  indices = np.asarray(indices, np.int64)
  counters = np.arange(patch_size * patch_size * 3, dtype=np.uint64)
  def draw(stream):
    return randomness.hash_uniform(seed, indices[:, None], stream,
                                     counters[None, :])
  values = draw(_NOISE_STREAM_A)
  if spec == "noise:normal":
    # Box-Muller; 1 - u keeps the log argument in (0, 1].
    radius = np.sqrt(-2.0 * np.log1p(-values))
    values = 0.5 + 0.25 * radius * np.cos(2 * np.pi * draw(_NOISE_STREAM_B))
  pixels = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
  return pixels.reshape(len(indices), patch_size, patch_size, 3)


def _noise_image(spec: str) -> np.ndarray:
  match = _NOISE_IMAGE_RE.match(spec)
  if not match:
    raise ValueError(
        f"Unknown noise source '{spec}'; use 'noise:uniform_image[:HxW]' for "
        f"one fixed noise image, or one of {NOISE_INPUTS} for per-patch noise.")
  hw = ((int(match.group(1)), int(match.group(2)))
        if match.group(1) else _DEFAULT_NOISE_IMAGE_HW)
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)


def _skimage_image(name: str) -> np.ndarray:
  import skimage.data  # pylint: disable=g-import-not-at-top
  loader = getattr(skimage.data, name, None)
  if not name or name.startswith("_") or not callable(loader):
    raise ValueError(
        f"Unknown skimage image '{name}'; try e.g. astronaut, coffee, chelsea, "
        "hubble_deep_field, rocket.")
  try:
    image = np.asarray(loader())
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"skimage image '{name}' could not be loaded: {e}") from e
  if image.ndim not in (2, 3) or image.dtype == object:
    raise ValueError(f"skimage '{name}' is not a 2-D image: {image.shape}.")
  return _to_rgb_uint8(image, f"skimage:{name}")


def _file_image(path: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Source image not found: {path}")
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      image.load()
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"Cannot read source image {path}: {e}") from e
  if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    return _to_rgb_uint8(np.asarray(image), path)
  # PIL's convert drops alpha (documented choice) and expands palettes/L.
  return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _to_rgb_uint8(array: np.ndarray, name: str) -> np.ndarray:
  """Maps gray/RGB(A) arrays of any common dtype to uint8 RGB."""
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
    raise ValueError(f"Image {name} has unsupported shape {array.shape}.")
  array = array[..., :3]
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  if array.dtype == np.uint8:
    return np.ascontiguousarray(array)
  if np.issubdtype(array.dtype, np.floating):
    scaled = np.clip(array, 0.0, 1.0) * 255.0
  elif array.max(initial=0) <= 255 and array.dtype.itemsize == 1:
    scaled = array.astype(np.float64)
  else:
    # 16-bit data (PIL stores some as 32-bit 'I'): full range is 65535.
    scaled = np.clip(array, 0, 65535) / 257.0
  return np.round(scaled).astype(np.uint8)
