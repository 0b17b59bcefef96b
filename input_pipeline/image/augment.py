"""Distillation-time augmentation of rendered patches: parameter sampling.

Applied to every sample the student sees (after the patch is rendered), keyed
by (seed, sample position q) so resumed and sharded runs see the same pixels:

* 'none': the patch as rendered.
* 'flip_crop': random horizontal flip + zero-pad `pad` + random P x P crop
  (the usual CIFAR augmentation).
* 'rrc_flip': RandomResizedCrop(scale=rrc_flip_scale, ratio 3/4..4/3) of the
  patch back to P (bilinear) + horizontal flip (for 224-px patches).

Each is expressed as one affine per sample from output pixel (u, v, 1) to
input pixel index (x, y), sampled bilinearly with zero fill by
`Renderer.augment` (input_pipeline/image/renderer.py).
numpy only (no TensorFlow).
"""

import numpy as np

from input_pipeline import randomness
from input_pipeline.image import patch_params

AUGMENTATIONS = ("none", "flip_crop", "rrc_flip")
# Hash streams of the augmentation, disjoint from the patch chain's.
_FLIP, _CROP_X, _CROP_Y, _RRC_FIRST = 101, 102, 103, 104
_RRC_RATIO = (3 / 4, 4 / 3)


def sample_augment_affine(kind: str, seed: int, positions: np.ndarray,
                          patch_size: int, *, pad: int = 4,
                          rrc_scale: tuple[float, float] = (0.08, 1.0)
                          ) -> np.ndarray | None:
  """Per-sample affine of the augmentation `kind`.

  Args:
    kind: one of AUGMENTATIONS.
    seed: data seed.
    positions: int array [B] of global sample positions q.
    patch_size: P.
    pad: zero padding of 'flip_crop'.
    rrc_scale: area fraction range of 'rrc_flip'.

  Returns:
    float32 [B, 2, 3] (output (u, v, 1) -> input pixel index), or None for
    'none'.
  """
  if kind not in AUGMENTATIONS:
    raise ValueError(f"Unknown train_augment '{kind}'; known: {AUGMENTATIONS}.")
  if kind == "none":
    return None
  positions = np.asarray(positions, np.int64).reshape(-1)
  num = len(positions)
  flip = randomness.hash_uniform(seed, positions, _FLIP) < 0.5
  affine = np.zeros((num, 2, 3))
  if kind == "flip_crop":
    def shift(stream):
      u = randomness.hash_uniform(seed, positions, stream)
      return np.minimum(np.floor(u * (2 * pad + 1)), 2 * pad) - pad
    # Crop then flip: x = dx + (P - 1 - u) when flipped, else dx + u.
    affine[:, 0, 0] = np.where(flip, -1.0, 1.0)
    affine[:, 0, 2] = shift(_CROP_X) + np.where(flip, patch_size - 1, 0)
    affine[:, 1, 1] = 1.0
    affine[:, 1, 2] = shift(_CROP_Y)
  else:
    box = patch_params.sample_rrc_boxes(seed, positions, patch_size,
                                        tuple(rrc_scale), _RRC_RATIO,
                                        first_stream=_RRC_FIRST)
    scale_x = box[:, 2] / patch_size
    scale_y = box[:, 3] / patch_size
    # x = x0 + (u' + 0.5) * w / P - 0.5 with u' = P - 1 - u when flipped.
    start_x = box[:, 0] + 0.5 * scale_x - 0.5
    affine[:, 0, 0] = np.where(flip, -scale_x, scale_x)
    affine[:, 0, 2] = np.where(flip, start_x + (patch_size - 1) * scale_x,
                               start_x)
    affine[:, 1, 1] = scale_y
    affine[:, 1, 2] = box[:, 1] + 0.5 * scale_y - 0.5
  return affine.astype(np.float32)
