"""The training stream of single-image patches, deterministic and resumable.

Sample j of global step s sits at position q = s * B + j. With a fixed dataset
of N patches (num_patches = N > 0), position q shows patch perm_e[q % N] of
epoch e = q // N, perm_e a stateless permutation of (seed, e); with an endless
stream (N = 0) it shows the fresh patch q. The distillation augmentation is
keyed by q. With teacher-guided selection (`input.selection`, selection.py)
position q shows instead the pool patch drawn for q from the selector's
weights. Hence a run resumed at `start_step` sees exactly the batches of an
uninterrupted run, and host h of `process_count` gets rows [h b, (h + 1) b) of
every global batch (b = B / process_count), whatever the batching or
parallelism.

A labelled dataset source (`dataset:folder:...`, `dataset:tar:...`,
`dataset:tfds:...`, see dataset_source.py) is sampled the same way with N its
size (num_patches is ignored): q shows example perm_e[q % N], augmented like a
patch, and the batches also carry the examples' labels (`has_labels`).

An audio source (`audio:...`, input_pipeline/audio/samples.py) takes the
audio sample path: the same positions and epoch order over clips of one
recording or labelled clips, in batches of the same dict shape. A video
source (`video:IMAGE`, input_pipeline/video/samples.py) takes the video
sample path: the same positions and epoch order over fake clips of one
image, rendered by the same renderer, one affine map per frame.

Every batch is a dict: 'image' uint8 [b, P, P, 3] (audio: int16 waveforms
[b, 16000, 1]; video: uint8 clips [b, T, P, P, 3]), plus 'label' int32 [b]
for a labelled source. Patches are rendered and augmented by the renderer of
`input.backend` (input_pipeline/image/renderer.py); TensorFlow (backend
'tf') and jax (backend 'jax') are imported only when that backend is used.
"""

import functools
import os
from typing import Any, Callable, Iterator

import numpy as np

from big_vision_sid import paths
from big_vision_sid import workdir
from input_pipeline import config as input_config
from input_pipeline import dataset_source
from input_pipeline import host_positions
from input_pipeline import randomness
from input_pipeline import selection
from input_pipeline.audio import samples as audio_samples
from input_pipeline.video import samples as video_samples
from input_pipeline.image import augment
from input_pipeline.image import patch_params
from input_pipeline.image import renderer as renderer_lib
from input_pipeline.image import sources

_PERM_STREAM = 201
# Bump when rendering changes, so that stale caches are not reused.
_CACHE_FORMAT = 1
_RENDER_CHUNK = 512


# The sample generators of the clip modalities, by their source test; each
# module has has_labels, examples_per_epoch and make_train_iterator.
_CLIP_MODALITIES = ((audio_samples.is_audio_source, audio_samples),
                    (video_samples.is_video_source, video_samples))


def _clip_modality(source: str) -> Any:
  """The sample module of an audio or video source; None for image sources."""
  return next((module for is_source, module in _CLIP_MODALITIES
               if is_source(source)), None)


def has_labels(input_cfg: Any) -> bool:
  """Whether the batches carry 'label': the source is a labelled dataset."""
  modality = _clip_modality(input_cfg.source)
  if modality is not None:
    return modality.has_labels(input_cfg)
  return dataset_source.is_dataset_source(input_cfg.source)


def patches_per_epoch(input_cfg: Any) -> int | None:
  """N of the fixed dataset, or None for an endless stream."""
  modality = _clip_modality(input_cfg.source)
  if modality is not None:
    return modality.examples_per_epoch(input_cfg)
  if has_labels(input_cfg):
    return len(_labeled_dataset(input_cfg))
  return input_config.fixed_set_size(input_cfg)


@functools.lru_cache(maxsize=2)
def _load_dataset(spec: str, image_size: int,
                  cache_dir: str | None) -> dataset_source.LabeledDataset:
  return dataset_source.load_dataset(spec, image_size, cache_dir=cache_dir)


def _labeled_dataset(input_cfg: Any) -> dataset_source.LabeledDataset:
  """The decoded dataset source, once per process (it is read every step)."""
  return _load_dataset(input_cfg.source, input_cfg.patch_size,
                       input_cfg.cache_dir or None)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num: int) -> np.ndarray:
  keys = randomness.hash_uniform(seed, np.arange(num), _PERM_STREAM, epoch)
  return np.argsort(keys, kind="stable")


def patch_indices(input_cfg: Any, seed: int, positions: np.ndarray,
                  pool_weights: np.ndarray | None = None) -> np.ndarray:
  """Patch index shown at each global sample position q.

  Args:
    input_cfg: the input config.
    seed: data seed.
    positions: int array of global sample positions.
    pool_weights: sampling weights over the selection pool
      (`selection.pool_weights`); None without teacher-guided selection.

  Returns:
    int64 patch (or dataset example) indices, one per position.
  """
  positions = np.asarray(positions, np.int64)
  if pool_weights is not None:
    return selection.sample_pool_indices(pool_weights, seed, positions)
  num = patches_per_epoch(input_cfg)
  if num is None:
    return positions
  epochs, slots = positions // num, positions % num
  indices = np.empty_like(positions)
  for epoch in np.unique(epochs):
    rows = epochs == epoch
    indices[rows] = _epoch_permutation(seed, int(epoch), num)[slots[rows]]
  return indices


def _load_checked_image(input_cfg: Any) -> np.ndarray:
  image = sources.load_source_image(input_cfg.source)
  sources.check_image_size(image.shape[:2], input_cfg.patch_size,
                           input_cfg.initcrop)
  return image


def patch_loader(input_cfg: Any, seed: int
                 ) -> Callable[[np.ndarray], np.ndarray]:
  """`load(indices) -> uint8 [B, P, P, 3]`: patches of the chain, unaugmented.

  The source image and the renderer are set up once, so a caller can load a
  large pool chunk by chunk.
  """
  size = input_cfg.patch_size
  if _clip_modality(input_cfg.source) is not None:
    raise ValueError(f"Source '{input_cfg.source}' has clips, not image "
                     "patches: patch selection and int8 calibration are "
                     "image-only.")
  if sources.is_noise_input(input_cfg.source):
    return lambda indices: sources.noise_patches(
        input_cfg.source, seed, np.asarray(indices, np.int64).reshape(-1), size)
  if has_labels(input_cfg):
    images = _labeled_dataset(input_cfg).images
    return lambda indices: images[np.asarray(indices, np.int64).reshape(-1)]
  image = _load_checked_image(input_cfg)
  renderer = renderer_lib.make_renderer(input_cfg.backend, image, size)

  def load(indices):
    indices = np.asarray(indices, np.int64).reshape(-1)
    out = np.empty((len(indices), size, size, 3), np.uint8)
    for start in range(0, len(indices), _RENDER_CHUNK):
      chunk = indices[start:start + _RENDER_CHUNK]
      params = patch_params.sample_patch_params(image.shape[:2], size, seed,
                                                chunk, input_cfg)
      out[start:start + len(chunk)] = renderer.render_numpy(params)
    return out

  return load


def load_patches(input_cfg: Any, seed: int, indices: np.ndarray) -> np.ndarray:
  """Patches `indices` of the chain (no distillation augmentation).

  Args:
    input_cfg: the input config.
    seed: data seed.
    indices: int array [B] of patch indices.

  Returns:
    uint8 [B, P, P, 3].
  """
  return patch_loader(input_cfg, seed)(indices)


def patch_set_fields(input_cfg: Any, seed: int) -> dict[str, Any]:
  """Every field that changes which pixels patch i of the chain has."""
  source = input_cfg.source
  fields = {
      "source": source, "seed": seed,
      # The backends' renders differ by float rounding.
      "backend": input_cfg.backend, "num_patches": input_cfg.num_patches,
      "patch_size": input_cfg.patch_size, "initcrop": input_cfg.initcrop,
      "rrc_scale": list(input_cfg.rrc_scale),
      "rrc_ratio": list(input_cfg.rrc_ratio), "degrees": input_cfg.degrees,
      "shear": input_cfg.shear, "vflip": bool(input_cfg.vflip),
      "jitter": dict(input_cfg.jitter),
  }
  path = paths.expand(source)
  if os.path.isfile(path):  # A changed file must not hit an old cache.
    fields["file"] = workdir.file_identity(path)
  return fields


def _cache_key(input_cfg: Any, seed: int) -> str:
  return workdir.cache_key({"format": _CACHE_FORMAT,
                            **patch_set_fields(input_cfg, seed)})


def cached_patches(input_cfg: Any, seed: int) -> np.ndarray:
  """The fixed dataset as a read-only memmap, rendered on first use.

  Args:
    input_cfg: config with cache_dir set and num_patches > 0.
    seed: data seed.

  Returns:
    uint8 memmap [N, P, P, 3] (row i = patch i).
  """
  num = patches_per_epoch(input_cfg)
  if not input_cfg.cache_dir or num is None:
    raise ValueError("cached_patches needs cache_dir and num_patches > 0.")
  cache_dir = paths.expand(input_cfg.cache_dir)
  path = os.path.join(cache_dir, f"patches_{_cache_key(input_cfg, seed)}.npy")
  if not os.path.exists(path):
    # Atomic: concurrent readers never see a partial file.
    workdir.save_npy(path, load_patches(input_cfg, seed, np.arange(num)))
  patches = np.load(path, mmap_mode="r")
  expected = (num, input_cfg.patch_size, input_cfg.patch_size, 3)
  if patches.shape != expected or patches.dtype != np.uint8:
    raise ValueError(f"Patch cache {path} holds {patches.dtype}{patches.shape},"
                     f" expected uint8{expected}; delete it to rebuild.")
  return patches


class _StepInputs:
  """numpy inputs of one host's slice of a step: what to render + augment."""

  def __init__(self, input_cfg: Any, seed: int, process_index: int,
               process_count: int, pool_weights: np.ndarray | None):
    self.host = host_positions.HostPositions(
        input_cfg.batch_size, process_index, process_count)
    self.cfg = input_cfg
    self.seed = seed
    self.pool_weights = pool_weights
    self.per_host = self.host.per_host
    self.noise = sources.is_noise_input(input_cfg.source)
    # Ready patches indexed like the dataset: a patch cache or real images.
    self.cache = None
    self.labels = None
    # The source image to render from; None when the patches are ready.
    self.image = None
    if has_labels(input_cfg):
      dataset = _labeled_dataset(input_cfg)
      self.cache, self.labels = dataset.images, dataset.labels
    elif not self.noise and input_cfg.cache_dir and input_cfg.num_patches:
      self.cache = cached_patches(input_cfg, seed)
    elif not self.noise:
      self.image = _load_checked_image(input_cfg)

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    cfg = self.cfg
    positions = self.host.at(step)
    indices = patch_indices(cfg, self.seed, positions, self.pool_weights)
    if self.noise:
      inputs = {"patches": sources.noise_patches(
          cfg.source, self.seed, indices, cfg.patch_size)}
    elif self.cache is not None:
      order = np.argsort(indices)  # Sorted reads are kinder to a memmap.
      patches = np.empty((len(indices),) + self.cache.shape[1:], np.uint8)
      patches[order] = self.cache[indices[order]]
      inputs = {"patches": patches}
    else:
      inputs = patch_params.render_params(patch_params.sample_patch_params(
          self.image.shape[:2], cfg.patch_size, self.seed, indices, cfg))
    affine = augment.sample_augment_affine(
        cfg.train_augment, self.seed, positions, cfg.patch_size, pad=cfg.pad,
        rrc_scale=tuple(cfg.rrc_flip_scale))
    if affine is not None:
      inputs["augment_affine"] = affine
    if self.labels is not None:
      inputs["label"] = self.labels[indices]
    return inputs


def make_train_iterator(input_cfg: Any, *, seed: int, start_step: int = 0,
                        process_index: int = 0, process_count: int = 1,
                        pool_weights: np.ndarray | None = None
                        ) -> Iterator[dict[str, Any]]:
  """Batches of this host for steps start_step, start_step + 1, ...

  Args:
    input_cfg: the input config (`config.default_input_config()` fields).
    seed: data seed (patches, epoch order and augmentation).
    start_step: first step to produce (to resume a run).
    process_index: this host's index h.
    process_count: number of hosts; batch_size is the global batch.
    pool_weights: with teacher-guided selection, the sampling weights over
      the pool (`selection.pool_weights`): position q shows the pool patch
      drawn for q instead of patch q (or the epoch permutation's).

  Returns:
    An endless iterator of dicts with b = batch_size // process_count:
    'image' uint8 [b, P, P, 3] (numpy for backend 'tf', a jax array for
    'jax'; audio sources: int16 [b, 16000, 1] numpy; video sources: uint8
    [b, T, P, P, 3] numpy) and, when
    `has_labels(input_cfg)`, 'label' int32 [b] (numpy).
  """
  modality = _clip_modality(input_cfg.source)
  if modality is not None:
    if pool_weights is not None:
      raise ValueError(f"Patch selection is image-only; source "
                       f"'{input_cfg.source}' needs input.selection='none'.")
    return modality.make_train_iterator(
        input_cfg, seed=seed, start_step=start_step,
        process_index=process_index, process_count=process_count,
        example_indices=functools.partial(patch_indices, input_cfg, seed))
  step_inputs = _StepInputs(input_cfg, seed, process_index, process_count,
                            pool_weights)
  renderer = renderer_lib.make_renderer(input_cfg.backend, step_inputs.image,
                                        input_cfg.patch_size)
  return renderer.batches(step_inputs, start_step,
                          num_parallel_calls=input_cfg.num_parallel_calls,
                          prefetch=input_cfg.prefetch)
