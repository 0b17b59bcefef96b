"""The video sample path of `train_data`: sources `video:IMAGE`, fake clips.

Sample j of global step s sits at position q = s * B + j, as for patches;
`example_indices(q)` (train_data.patch_indices) says which fake clip it
shows: of the fixed set of N = input.num_patches clips, reshuffled every
epoch (200k in the paper), or a fresh clip per position when N = 0. Clip i
is a pure function of (image, seed, i) (clips.py) and the view of it that
position q shows -- frames, short-side scale, crop, flip, AugMix -- a pure
function of (seed, q) (augment.py), so resumed, re-batched and host-sharded
runs see the same pixels. Clips are rendered on the fly by the patch
renderer of input.backend (one row per frame) and never written to disk.

Batches: 'image' uint8 [b, clip_frames, P, P, 3] numpy; host h of
process_count gets rows [h b, (h + 1) b) of every global batch. Worker
threads (input.num_parallel_calls; -1: one per CPU) prepare up to
max(input.prefetch, workers) batches ahead of the step, in order.
"""

import os
from typing import Any, Callable, Iterator

import numpy as np

from input_pipeline import config as input_config
from input_pipeline import host_positions
from input_pipeline import ordered_prefetch
from input_pipeline.image import renderer as renderer_lib
from input_pipeline.image import sources
from input_pipeline.video import PREFIX
from input_pipeline.video import augment
from input_pipeline.video import clips
from input_pipeline.video import labeled

Batch = dict[str, np.ndarray]


def is_video_source(spec: str) -> bool:
  """Whether `input.source` names a video source."""
  return spec.startswith(PREFIX)


def load_image(input_cfg: Any) -> np.ndarray:
  """The checked source image of a `video:IMAGE` source, uint8 [H, W, 3].

  Raises:
    ValueError: the source is a labelled video set (evaluation only), or the
      image is unusable (see sources.load_source_image).
  """
  if labeled.is_labeled_spec(input_cfg.source):
    raise ValueError(
        f"input.source='{input_cfg.source}' is a labelled video set, which "
        "is for evaluation (eval.dataset); training sources are fake clips "
        f"of one image, '{PREFIX}IMAGE' (e.g. '{PREFIX}$SID_SHARED_DIR/images/"
        "city.jpg').")
  image = sources.load_source_image(input_cfg.source[len(PREFIX):])
  sources.check_image_size(image.shape[:2], 1, input_cfg.initcrop)
  return image


def has_labels(input_cfg: Any) -> bool:
  """Fake clips of one image carry no labels."""
  del input_cfg
  return False


def examples_per_epoch(input_cfg: Any) -> int | None:
  """N of the fixed clip set; None for an endless stream.

  Also loads and checks the image, so a bad file fails before anything
  compiles.
  """
  load_image(input_cfg)
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
    self.image = load_image(input_cfg)
    self.renderer = renderer_lib.make_renderer(input_cfg.backend, self.image,
                                               input_cfg.patch_size)

  def __call__(self, step: int) -> Batch:
    cfg, video = self.cfg, self.cfg.video
    positions = self.host.at(step)
    params = clips.sample_clip_params(self.image.shape[:2], self.seed,
                                      self.example_indices(positions), cfg)
    frames, view = augment.sample_views(self.seed, positions, video,
                                        cfg.patch_size)
    rendered = self.renderer.render_numpy(clips.render_params(
        params, frames, video.frames, view, cfg.patch_size))
    batch = rendered.reshape((self.per_host, video.clip_frames)
                             + rendered.shape[1:])
    if video.augmix:
      batch = np.stack([augment.augmix(clip, self.seed, int(q), video)
                        for clip, q in zip(batch, positions)])
    return {"image": batch}


def make_train_iterator(input_cfg: Any, *, seed: int, start_step: int,
                        process_index: int, process_count: int,
                        example_indices: Callable[[np.ndarray], np.ndarray]
                        ) -> Iterator[Batch]:
  """This host's batches for steps start_step, start_step + 1, ...

  Args:
    input_cfg: the input config, source `video:IMAGE`.
    seed: data seed (clips, epoch order, views, AugMix).
    start_step: first step to produce (to resume a run).
    process_index: this host's index h.
    process_count: number of hosts; batch_size is the global batch.
    example_indices: global sample positions -> clip indices
      (train_data.patch_indices).

  Returns:
    An endless iterator of numpy batches (see the module docstring).
  """
  load = _StepInputs(input_cfg, seed, process_index, process_count,
                     example_indices)
  workers = ((os.cpu_count() or 1) if input_cfg.num_parallel_calls == -1
             else input_cfg.num_parallel_calls)
  return ordered_prefetch.ordered_batches(
      load, start_step, workers=workers, ahead=max(input_cfg.prefetch, workers),
      name="video-batches")
