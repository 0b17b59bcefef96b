"""The audio sample path of `train_data`: sources `audio:...`, batches of clips.

Sample j of global step s sits at position q = s * B + j, as for patches;
`example_indices(q)` (train_data.patch_indices) says which clip or labelled
example it shows. Two kinds of source:

  audio:PATH | audio:noise:KIND   one recording (recording.py). Clip i is a
      pure function of (recording, seed, i) (clips.py); the fixed set of
      N = num_patches clips is reshuffled every epoch (num_patches = 0: an
      endless stream of fresh clips), cached when cache_dir is set.
  audio:npz:... | audio:folder:... | audio:tfds:...   labelled clips
      (labeled.py), N their number (num_patches is ignored). Position q's
      example goes through one augmentation drawn for q (probability
      input.audio.augment_p; fresh every epoch) and the batches carry labels.

Every sample is then cropped to a 1-s window keyed by q (`clips.crop`, after
input.audio.pad_seconds of zeros on both sides). Batches: 'image' int16
[b, SEGMENT_SAMPLES, 1] (the waveform, full scale 32768; the networks
compute their spectrograms) plus 'label' int32 [b] for labelled sources;
host h of process_count gets rows [h b, (h + 1) b) of every global batch.
A worker thread prepares input.prefetch batches ahead of the step. Neither
TensorFlow nor jax is needed (tfds sources import TensorFlow).
"""

from typing import Any, Callable, Iterator

import numpy as np

from input_pipeline import config as input_config
from input_pipeline import host_positions
from input_pipeline import ordered_prefetch
from input_pipeline.audio import PREFIX
from input_pipeline.audio import augment
from input_pipeline.audio import clips as clips_lib
from input_pipeline.audio import labeled
from input_pipeline.audio import recording as recording_lib

LABELED_STREAMS = augment.Streams(apply=411, choice=412, params=413,
                                  samples=414)
Batch = dict[str, np.ndarray]


def is_audio_source(spec: str) -> bool:
  """Whether `input.source` names an audio source."""
  return spec.startswith(PREFIX)


def has_labels(input_cfg: Any) -> bool:
  """Whether the batches carry 'label': labelled clips."""
  return labeled.is_labeled_spec(input_cfg.source)


def examples_per_epoch(input_cfg: Any) -> int | None:
  """N of the labelled set or of the fixed clip set; None for a stream.

  Also loads and checks the source, so a bad file fails before anything
  compiles.
  """
  if has_labels(input_cfg):
    return len(labeled.load(input_cfg.source))
  recording_lib.check_recording(
      input_cfg.source, clip_seconds=input_cfg.audio.clip_seconds,
      noise_seconds=input_cfg.audio.noise_seconds)
  return input_config.fixed_set_size(input_cfg)


class _StepInputs:
  """One host's slice of a step's batch, from the global sample positions."""

  def __init__(self, input_cfg: Any, seed: int, process_index: int,
               process_count: int,
               example_indices: Callable[[np.ndarray], np.ndarray]):
    self.host = host_positions.HostPositions(
        input_cfg.batch_size, process_index, process_count)
    self.cfg = input_cfg
    self.seed = seed
    self.per_host = self.host.per_host
    self.example_indices = example_indices
    self.names = tuple(input_cfg.audio.augmentations)
    augment.check_names(self.names)
    self.labeled = None
    self.recording = None
    self.cache = None
    if has_labels(input_cfg):
      self.labeled = labeled.load(input_cfg.source)
    elif input_cfg.cache_dir and input_cfg.num_patches:
      self.cache = clips_lib.cached_clips(input_cfg, seed)
    else:
      self.recording = clips_lib.load_recording(input_cfg, seed)

  def _augmented_examples(self, indices, positions) -> list[np.ndarray]:
    """Labelled clips through the augmentation drawn for their position."""
    out = []
    for index, position in zip(indices, positions):
      clip = self.labeled.clip(int(index))
      plan = augment.draw_plan(self.names, self.cfg.audio.augment_p,
                               self.seed, int(position), LABELED_STREAMS)
      if plan.name is None:
        out.append(clip)
        continue
      need = plan.input_length(len(clip))
      segment = np.pad(clip.astype(np.float64) / 32768.0,
                       (0, max(need - len(clip), 0)))
      out.append(augment.to_int16(augment.apply_plan(
          plan, segment, len(clip), self.seed, int(position),
          LABELED_STREAMS, self.labeled.samples)))
    return out

  def __call__(self, step: int) -> Batch:
    cfg = self.cfg
    positions = self.host.at(step)
    indices = self.example_indices(positions)
    batch = {}
    if self.labeled is not None:
      examples = self._augmented_examples(indices, positions)
      batch["label"] = self.labeled.labels[indices]
    elif self.cache is not None:
      order = np.argsort(indices)  # Sorted reads are kinder to a memmap.
      examples = np.empty((len(indices), self.cache.shape[1]), np.int16)
      examples[order] = self.cache[indices[order]]
    else:
      examples = clips_lib.generate_clips(self.recording, self.seed, indices,
                                          cfg.audio)
    batch["image"] = clips_lib.crop(examples, self.seed, positions,
                                    cfg.audio.pad_seconds)[..., None]
    return batch


def make_train_iterator(input_cfg: Any, *, seed: int, start_step: int,
                        process_index: int, process_count: int,
                        example_indices: Callable[[np.ndarray], np.ndarray]
                        ) -> Iterator[Batch]:
  """This host's batches for steps start_step, start_step + 1, ...

  Args:
    input_cfg: the input config, source `audio:...`.
    seed: data seed (clips, epoch order, augmentation, crops).
    start_step: first step to produce (to resume a run).
    process_index: this host's index h.
    process_count: number of hosts; batch_size is the global batch.
    example_indices: global sample positions -> clip / example indices
      (train_data.patch_indices).

  Returns:
    An endless iterator of numpy batches (see the module docstring).
  """
  return ordered_prefetch.ordered_batches(
      _StepInputs(input_cfg, seed, process_index, process_count,
                  example_indices),
      start_step, workers=1, ahead=input_cfg.prefetch, name="audio-batches")
