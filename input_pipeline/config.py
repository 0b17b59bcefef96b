"""Default configuration of the single-image patch pipeline (`config.input`)."""

import ml_collections

from input_pipeline.audio import augment as audio_augment


def default_input_config() -> ml_collections.ConfigDict:
  """The paper's CIFAR setting (App. C.1); experiment configs override fields.

  Returns:
    A ConfigDict with the fields documented inline below.
  """
  cfg = ml_collections.ConfigDict()
  # What the patches are cut from: a file path ($SID_SHARED_DIR expanded),
  # 'skimage:<name>', 'noise:uniform_image[:HxW]'; or per-patch noise INPUTS
  # 'noise:uniform' / 'noise:normal' (paper Table 11). See sources.py.
  # 'audio:...' sources are clips, not patches (audio/samples.py; `audio`).
  # 'video:IMAGE' makes fake clips of IMAGE (video/samples.py; `video`).
  cfg.source = "$SID_SHARED_DIR/images/city.jpg"
  # Side P of the square patches: 32 for CIFAR students, 224 for ImageNet.
  cfg.patch_size = 32
  # Size N of the fixed patch dataset, reshuffled every epoch; 0 = an endless
  # stream where every sample is a fresh patch.
  cfg.num_patches = 50_000
  # Renderer: 'tf' (tf.data, CPU workers) or 'jax' (jnp, e.g. on the GPU).
  cfg.backend = "tf"
  # GLOBAL batch size; each of process_count hosts gets an equal slice.
  cfg.batch_size = 128

  # --- The patch chain, in order. ---
  # RandomCrop of a square of side initcrop * min(H, W).
  cfg.initcrop = 0.5
  # RandomResizedCrop to R = floor(sqrt(2) P): area fraction and aspect (w/h)
  # ranges, resampled until valid (no centre-crop fallback).
  cfg.rrc_scale = (1 / 500, 1.0)
  cfg.rrc_ratio = (3 / 4, 4 / 3)
  # RandomAffine: rotation in +-degrees and x-shear in +-shear degrees
  # (bilinear, zero fill), followed by CenterCrop(P).
  cfg.degrees = 30.0
  cfg.shear = 30.0
  # Random vertical flip (after the affine); off in the paper's CIFAR chain.
  cfg.vflip = False
  # ColorJitter, applied to a patch with probability p; factors are uniform in
  # [1 - x, 1 + x] (hue: shift in [-hue, hue]), the four ops in random order.
  cfg.jitter = ml_collections.ConfigDict(
      dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.5))

  # --- Augmentation of each sample at distillation time. ---
  # 'none' | 'flip_crop' (flip + pad + crop, CIFAR) | 'rrc_flip' (224 px).
  cfg.train_augment = "flip_crop"
  # Zero padding of 'flip_crop'.
  cfg.pad = 4
  # Area fraction range of 'rrc_flip'.
  cfg.rrc_flip_scale = (0.08, 1.0)

  # --- Teacher-guided patch selection (input_pipeline/selection.py). ---
  # 'none' | 'class_balanced' | 'entropy' | 'kmeans'. A pool of candidate
  # patches (the fixed set if num_patches > 0, else the first selection_pool
  # patches) is scored once by the teacher; samples are drawn by weight.
  cfg.selection = "none"
  cfg.selection_pool = 20_000
  # k of 'kmeans' over the teacher's penultimate features.
  cfg.selection_clusters = 100
  # Softmax temperature of the teacher entropy of 'entropy'.
  cfg.selection_temperature = 1.0

  # --- tf.data performance. ---
  # Parallel batch renders; -1 = tf.data.AUTOTUNE. Output order is fixed.
  cfg.num_parallel_calls = -1
  # Batches prefetched ahead of the train step.
  cfg.prefetch = 2
  # If set, the fixed dataset (num_patches > 0) is rendered once into
  # <cache_dir>/<hash>.npy (uint8, written atomically; the hash covers source,
  # seed, N and all chain fields) and memory-mapped on reuse.
  cfg.cache_dir = ""

  # --- Audio sources (`audio:...`, input_pipeline/audio/). ---
  cfg.audio = ml_collections.ConfigDict(dict(
      # Length of the clips cut from a recording (the paper's 2 s); the
      # networks see a random 1-s crop of each.
      clip_seconds=2.0,
      # Probability that a clip (a recording's clip i, or a labelled example
      # at position q) goes through one augmentation, drawn uniformly from
      # `augmentations` (audio/augment.py; all of them by default).
      augment_p=1.0,
      augmentations=audio_augment.NAMES,
      # Zeros on both sides of a clip before its random 1-s crop: a time
      # shift of up to this much (e.g. 0.1 for 1-s keyword clips).
      pad_seconds=0.0,
      # Length of an 'audio:noise:white|pink' recording.
      noise_seconds=300.0))

  # --- Video sources (`video:IMAGE`, input_pipeline/video/). ---
  # Fake clips use initcrop, rrc_scale, rrc_ratio and jitter above (the
  # official generator's values are this file's defaults); num_patches clips.
  cfg.video = ml_collections.ConfigDict(dict(
      # Frames per fake clip (the official generator: 16; the paper's text:
      # 12) and their side in pixels (the official 230; with scale and crop
      # folded into one map it only sets the preview's size).
      frames=16,
      frame_size=230,
      # Each sample: clip_frames frames, every frame_stride-th, from a random
      # start (4 at sampling rate 1 officially); the frame's side scaled to
      # an integer uniform in short_side, a random patch_size crop of it and
      # a horizontal flip with probability 0.5 when hflip.
      clip_frames=4,
      frame_stride=1,
      short_side=(183, 229),
      hflip=True,
      # pytorchvideo's AugMix over the whole clip (same ops for every frame):
      # level magnitude, chains (width), ops per chain (-1: 1-3 at random)
      # and the Dirichlet/Beta concentration.
      augmix=True,
      augmix_magnitude=3,
      augmix_width=3,
      augmix_depth=-1,
      augmix_alpha=1.0))
  return cfg


def fixed_set_size(input_cfg: ml_collections.ConfigDict) -> int | None:
  """N = input.num_patches of a fixed sample set, or None for an endless stream."""
  if input_cfg.num_patches < 0:
    raise ValueError(f"num_patches must be >= 0, got {input_cfg.num_patches}.")
  return input_cfg.num_patches or None
