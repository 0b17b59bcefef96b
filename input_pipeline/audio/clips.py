"""Clips of one recording, each a pure function of (recording, seed, index).

Clip i is the recording's stretch at a hashed offset, through one
augmentation drawn for i (`augment.draw_plan`, probability
input.audio.augment_p): input.audio.clip_seconds of audio (2 s in the paper),
int16. The fixed set of N = input.num_patches clips (50,000 in the paper) is
optionally cached once as int16 [N, clip samples] in
`<cache_dir>/audio_clips_<hash>.npy` (written atomically, chunk by chunk;
the hash covers every field that changes a clip, and the recording file's
identity) and memory-mapped on reuse.

`crop` is the distillation-time augmentation: a random window of
SEGMENT_SAMPLES (1 s) of each clip, zero-padded by input.audio.pad_seconds
on both sides first (a time shift of up to that much), keyed by the sample
position q.
"""

import os
import time
from typing import Any, Sequence

from absl import logging
import numpy as np

from big_vision_sid import paths
from big_vision_sid import workdir
from input_pipeline import randomness
from input_pipeline.audio import PREFIX
from input_pipeline.audio import SAMPLE_RATE
from input_pipeline.audio import SEGMENT_SAMPLES
from input_pipeline.audio import augment
from input_pipeline.audio import recording as recording_lib

_OFFSET_STREAM = 401
STREAMS = augment.Streams(apply=402, choice=403, params=404, samples=405)
CROP_STREAM = 406
# Bump when clip generation or an augmentation changes: stale caches go.
_CACHE_FORMAT = 1
_CACHE_CHUNK = 1024


def clip_samples(audio_cfg: Any) -> int:
  """Samples per generated clip."""
  return round(audio_cfg.clip_seconds * SAMPLE_RATE)


def load_recording(input_cfg: Any, seed: int) -> np.ndarray:
  """The checked recording of `input_cfg.source` (float32 [T])."""
  return recording_lib.load_recording(
      input_cfg.source, seed=seed, clip_seconds=input_cfg.audio.clip_seconds,
      noise_seconds=input_cfg.audio.noise_seconds)


def generate_clips(recording: np.ndarray, seed: int, indices: np.ndarray,
                   audio_cfg: Any) -> np.ndarray:
  """Clips `indices` of a recording.

  Args:
    recording: float32 [T] (full scale 1.0), at least one clip long.
    seed: data seed.
    indices: int clip indices [n].
    audio_cfg: `input.audio` (clip_seconds, augmentations, augment_p).

  Returns:
    int16 [n, clip_samples].
  """
  length = clip_samples(audio_cfg)
  names = tuple(audio_cfg.augmentations)
  augment.check_names(names)
  indices = np.asarray(indices, np.int64).reshape(-1)
  out = np.empty((len(indices), length), np.int16)
  for row, index in enumerate(indices):
    plan = augment.draw_plan(names, audio_cfg.augment_p, seed, int(index),
                             STREAMS)
    need = plan.input_length(length)
    room = max(len(recording) - need + 1, 1)
    start = int(randomness.hash_uniform(seed, index, _OFFSET_STREAM) * room)
    segment = recording[start:start + need]
    segment = np.pad(segment, (0, need - len(segment)))
    out[row] = augment.to_int16(augment.apply_plan(
        plan, segment, length, seed, int(index), STREAMS, recording))
  return out


def clip_set_fields(input_cfg: Any, seed: int) -> dict[str, Any]:
  """Every field that changes which samples clip i has."""
  audio = input_cfg.audio
  fields = {
      "format": _CACHE_FORMAT, "source": input_cfg.source, "seed": seed,
      "num_clips": input_cfg.num_patches,
      "clip_seconds": float(audio.clip_seconds),
      "augmentations": list(audio.augmentations),
      "augment_p": float(audio.augment_p),
      "noise_seconds": float(audio.noise_seconds),
  }
  path = paths.expand(input_cfg.source[len(PREFIX):])
  if os.path.isfile(path):  # A changed file must not hit an old cache.
    fields["file"] = workdir.file_identity(path)
  return fields


def cached_clips(input_cfg: Any, seed: int) -> np.ndarray:
  """The fixed clip set as a read-only memmap, generated on first use.

  Args:
    input_cfg: config with cache_dir set and num_patches = N > 0.
    seed: data seed.

  Returns:
    int16 memmap [N, clip_samples] (row i = clip i).
  """
  num = input_cfg.num_patches
  if not input_cfg.cache_dir or num <= 0:
    raise ValueError("cached_clips needs cache_dir and num_patches > 0.")
  key = workdir.cache_key(clip_set_fields(input_cfg, seed))
  path = os.path.join(paths.expand(input_cfg.cache_dir),
                      f"audio_clips_{key}.npy")
  length = clip_samples(input_cfg.audio)
  if not os.path.exists(path):
    recording = load_recording(input_cfg, seed)
    start = time.time()

    def write(f):
      np.lib.format.write_array_header_1_0(f, {
          "descr": np.lib.format.dtype_to_descr(np.dtype(np.int16)),
          "fortran_order": False, "shape": (num, length)})
      for first in range(0, num, _CACHE_CHUNK):
        indices = np.arange(first, min(first + _CACHE_CHUNK, num))
        f.write(generate_clips(recording, seed, indices,
                               input_cfg.audio).tobytes())
        done, elapsed = indices[-1] + 1, time.time() - start
        # Minutes of single-threaded work on a large set: say how long.
        logging.info("Generating audio clips: %d/%d, elapsed %s, ETA %s",
                     done, num, workdir.format_duration(elapsed),
                     workdir.format_duration(elapsed * (num - done) / done))
    # Atomic: concurrent readers never see a partial file.
    workdir.atomic_write(path, write)
    logging.info("Generated %d audio clips in %.1fs: %s", num,
                 time.time() - start, path)
  clips = np.load(path, mmap_mode="r")
  if clips.shape != (num, length) or clips.dtype != np.int16:
    raise ValueError(f"Clip cache {path} holds {clips.dtype}{clips.shape}, "
                     f"expected int16{(num, length)}; delete it to rebuild.")
  return clips


def crop(clips: Sequence[np.ndarray], seed: int, positions: np.ndarray,
         pad_seconds: float) -> np.ndarray:
  """The 1-s training window of each clip, keyed by its sample position.

  Args:
    clips: n 1-D int16 clips (rows of an array, or of different lengths).
    seed: data seed.
    positions: int global sample positions q [n].
    pad_seconds: zeros added on both sides before cropping; a clip still
      shorter than the window is zero-padded at its end.

  Returns:
    int16 [n, SEGMENT_SAMPLES].
  """
  pad = round(pad_seconds * SAMPLE_RATE)
  uniforms = randomness.hash_uniform(seed, np.asarray(positions, np.int64),
                                     CROP_STREAM)
  out = np.zeros((len(uniforms), SEGMENT_SAMPLES), np.int16)
  for row, (clip, u) in enumerate(zip(clips, uniforms)):
    span = max(len(clip) + 2 * pad, SEGMENT_SAMPLES)
    start = int(u * (span - SEGMENT_SAMPLES + 1)) - pad
    # Window [start, start + S) of the clip; outside it, zeros.
    lo, hi = max(start, 0), min(start + SEGMENT_SAMPLES, len(clip))
    if hi > lo:
      out[row, lo - start:hi - start] = clip[lo:hi]
  return out
