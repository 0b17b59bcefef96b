"""Labelled videos as evaluation sets: temporal clips of every video.

`eval.dataset` (with `eval.name = 'video_clips'`, evaluators.py) may be

  video:folder:ROOT[SUBSET]  ROOT/<class_name>/*.mp4|avi|mkv|mov|webm, the
                             layout pytorchvideo's Kinetics and Ucf101 read
                             (e.g. Kinetics-400's val/ or UCF-101's test
                             videos per class); labels are the alphabetical
                             index of the class folder; decoded with PyAV
  video:tfds:NAME:SPLIT      a TFDS video dataset with `video` and `label`,
                             e.g. `video:tfds:ucf101:test` (TFDS's default
                             config ucf101_1_256: 256x256 frames, split 1)

with labeled_data's subset suffix for folders (`[::10]`: every 10th video).
Each video gives NUM_CLIPS = 10 clips evenly spaced in time, as
pytorchvideo's 'constant_clips_per_video' sampler in the paper's test
loader: windows of W = CLIP_FRAMES * STRIDE = 48 frames starting at
k * max(n - W, 0) / 9 (rounded down), k = 0..9, for a video of n frames,
each subsampled to CLIP_FRAMES = 4 frames at floor(linspace(0, W - 1, 4)) =
0, 15, 31, 47 of the window (UniformTemporalSubsample; "stride 12", the 4 of
48 frames X3D-XS is trained on); past a video's end its last frame repeats.
Every frame's shorter side is resized to resize_size (default round(S /
0.875) = 183 for S = 160, the official ShortSideScale(183)) and centre-
cropped to S = eval.image_size, by labeled_data.resize_and_crop (bicubic;
pytorchvideo's ShortSideScale is bilinear).

Videos are decoded one at a time, a few in parallel, so a large set never
sits in memory. PyAV is imported by the folder scheme only, TensorFlow by
the tfds scheme only.
"""

import concurrent.futures
import dataclasses
import functools
import os
import pathlib
from typing import Callable, Iterator, NamedTuple

import numpy as np
from PIL import Image

from big_vision_sid import paths
from big_vision_sid.registry import Registry
from input_pipeline import labeled_data
from input_pipeline.video import PREFIX

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
NUM_CLIPS = 10
CLIP_FRAMES = 4
STRIDE = 12

SCHEMES = Registry("labelled video scheme")
# Videos decoded at once (each in a thread; PyAV releases the GIL).
_DECODE_AHEAD = max(2, os.cpu_count() or 1)


def clip_frame_indices(num_frames: int, num_clips: int = NUM_CLIPS,
                       clip_frames: int = CLIP_FRAMES,
                       stride: int = STRIDE) -> np.ndarray:
  """Frame indices int64 [num_clips, clip_frames] of a video of num_frames.

  See the module docstring; indices past the end are the last frame.
  """
  window = clip_frames * stride
  room = max(num_frames - window, 0)
  starts = (np.arange(num_clips) * room) // max(num_clips - 1, 1)
  offsets = np.linspace(0, window - 1, clip_frames).astype(np.int64)
  return np.minimum(starts[:, None] + offsets[None, :], num_frames - 1)


@dataclasses.dataclass(frozen=True)
class LabeledVideos:
  """Labelled videos, decoded lazily into their evaluation clips.

  Attributes:
    name: the spec they were loaded from.
    labels: int32 [N], read-only.
    class_names: names indexed by label, or None when unknown.
    image_size: side S of the frames.
    resize_size: shorter side before the centre crop.
    videos: () -> the videos in order, each uint8 [n_i, H, W, 3].
  """
  name: str
  labels: np.ndarray = dataclasses.field(repr=False)
  class_names: tuple[str, ...] | None
  image_size: int
  resize_size: int
  videos: Callable[[], Iterator[np.ndarray]] = dataclasses.field(repr=False)

  @property
  def num_examples(self) -> int:
    return len(self.labels)

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def num_clips(self) -> int:
    return NUM_CLIPS * len(self.labels)

  def clips(self, frames: np.ndarray) -> np.ndarray:
    """The NUM_CLIPS clips of one video: uint8 [10, 4, S, S, 3]."""
    if frames.ndim != 4 or not len(frames):
      raise ValueError(f"A video of '{self.name}' has no frames "
                       f"(decoded shape {frames.shape}).")
    indices = clip_frame_indices(len(frames))
    needed = np.unique(indices)
    resized = {i: labeled_data.resize_and_crop(
        Image.fromarray(frames[i]), self.image_size, self.resize_size)
               for i in needed}
    return np.stack([np.stack([resized[i] for i in row]) for row in indices])

  def clip_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every video's clips in fixed-size batches, each clip once.

    Yields:
      {'image': uint8 [B, 4, S, S, 3], 'video': int32 [B] the video of each
       clip, 'mask': bool [B]}; the last batch is padded with mask False.
    """
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}.")
    shape = (CLIP_FRAMES, self.image_size, self.image_size, 3)
    image = np.zeros((batch_size,) + shape, np.uint8)
    video = np.zeros(batch_size, np.int32)
    count = 0
    for index, frames in enumerate(self.videos()):
      for clip in self.clips(frames):
        image[count], video[count] = clip, index
        count += 1
        if count == batch_size:
          yield {"image": image.copy(), "video": video.copy(),
                 "mask": np.ones(batch_size, bool)}
          count = 0
    if count:
      image[count:], video[count:] = 0, 0
      yield {"image": image, "video": video,
             "mask": np.arange(batch_size) < count}


# --- Parsing. ---


def is_labeled_spec(spec: str) -> bool:
  """Whether `spec` is `video:SCHEME:...` with a labelled video scheme."""
  if not spec.startswith(PREFIX):
    return False
  return spec[len(PREFIX):].partition(":")[0] in SCHEMES


def usage() -> str:
  """'video:folder:ROOT[SUBSET], ...': the spec forms."""
  return ", ".join(PREFIX + SCHEMES.get(n).usage for n in SCHEMES.names())


class Scheme(NamedTuple):
  """A registered scheme: its usage form and its opener."""
  usage: str
  open: Callable[[labeled_data.Spec, int | None],
                 tuple[np.ndarray, tuple[str, ...] | None,
                       Callable[[], Iterator[np.ndarray]]]]


def _scheme(name: str, form: str):
  def register(opener):
    SCHEMES.register(name)(Scheme(form, opener))
    return opener
  return register


def decode_video(path: str) -> np.ndarray:
  """Every frame of a video file, uint8 [n, H, W, 3] RGB (PyAV).

  Raises:
    ValueError: the file is not a decodable video.
  """
  import av  # pylint: disable=g-import-not-at-top
  try:
    with av.open(path) as container:
      frames = [frame.to_ndarray(format="rgb24")
                for frame in container.decode(video=0)]
  except (av.error.FFmpegError, IndexError, ValueError) as e:
    raise ValueError(f"Cannot decode video {path}: {e}") from e
  if not frames:
    raise ValueError(f"Video {path} has no frames.")
  return np.stack(frames)


def _bounded_map(function: Callable[[str], np.ndarray], items: list[str]
                 ) -> Iterator[np.ndarray]:
  """function(item) in order, at most _DECODE_AHEAD computed ahead."""
  with concurrent.futures.ThreadPoolExecutor(_DECODE_AHEAD) as pool:
    for first in range(0, len(items), _DECODE_AHEAD):
      yield from pool.map(function, items[first:first + _DECODE_AHEAD])


@_scheme("folder", "folder:ROOT[SUBSET]")
def _open_folder(spec: labeled_data.Spec, max_examples: int | None):
  root = pathlib.Path(paths.expand(spec.argument))
  if not root.is_dir():
    raise FileNotFoundError(f"Labelled video spec '{spec.text}': {root} is "
                            "not a folder.")
  class_files = {
      d.name: sorted(str(f) for f in d.iterdir()
                     if f.name.lower().endswith(VIDEO_EXTENSIONS))
      for d in sorted(root.iterdir()) if d.is_dir()}
  class_names = tuple(n for n, files in class_files.items() if files)
  if not class_names:
    raise FileNotFoundError(
        f"Labelled video spec '{spec.text}': no {'/'.join(VIDEO_EXTENSIONS)} "
        f"files in class folders of {root} (expected <root>/<class>/<video>).")
  files = [f for n in class_names for f in class_files[n]]
  labels = np.asarray([i for i, n in enumerate(class_names)
                       for _ in class_files[n]], np.int32)
  keep = (spec.subset.indices(len(files)) if spec.subset
          else np.arange(len(files)))[:max_examples]
  kept = [files[i] for i in keep]
  return labels[keep], class_names, lambda: _bounded_map(decode_video, kept)


@_scheme("tfds", "tfds:NAME:SPLIT")
def _open_tfds(spec: labeled_data.Spec, max_examples: int | None):
  name, _, split = spec.argument.partition(":")
  if not name or not split:
    raise ValueError(f"Labelled video spec '{spec.text}' must be "
                     "'video:tfds:NAME:SPLIT', e.g. 'video:tfds:ucf101:test'.")
  builder = labeled_data.prepared_tfds_builder(name)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def examples(decode_video=True):
    # The labels are read without decoding the videos.
    decoders = None if decode_video else {"video": tfds.decode.SkipDecoding()}
    dataset = builder.as_dataset(split=split, shuffle_files=False,
                                 decoders=decoders)
    if max_examples:
      dataset = dataset.take(max_examples)
    return tfds.as_numpy(dataset)

  labels = np.asarray([int(e["label"]) for e in examples(False)], np.int32)
  names = getattr(builder.info.features["label"], "names", None)
  return (labels, tuple(names) if names else None,
          lambda: (np.asarray(e["video"]) for e in examples()))


@functools.lru_cache(maxsize=4)
def load(spec: str, *, image_size: int, resize_size: int | None = None,
         max_examples: int | None = None) -> LabeledVideos:
  """The labelled videos of `spec` (see the module docstring).

  Args:
    spec: `video:folder:...` or `video:tfds:...`.
    image_size: side S of the evaluation frames.
    resize_size: shorter side before the centre crop; round(S / 0.875) if
      None.
    max_examples: keep only the first videos (after the subset).

  Returns:
    The videos, decoded when their clips are read.

  Raises:
    FileNotFoundError: a missing folder, one without video files, or a TFDS
      dataset that cannot be prepared.
    ValueError: a malformed spec.
  """
  if max_examples is not None and max_examples <= 0:
    raise ValueError(f"max_examples must be positive, got {max_examples}.")
  scheme = spec[len(PREFIX):].partition(":")[0]
  if not spec.startswith(PREFIX) or scheme not in SCHEMES:
    raise ValueError(f"Labelled video spec '{spec}' must be one of {usage()}.")
  parsed = labeled_data.parse(spec, PREFIX)
  if resize_size is None:
    resize_size = round(image_size / 0.875)
  if resize_size < image_size:
    raise ValueError(f"resize_size={resize_size} is smaller than "
                     f"image_size={image_size}: the centre crop would not fit.")
  labels, class_names, videos = SCHEMES.get(scheme).open(parsed, max_examples)
  if not len(labels):
    raise ValueError(f"Labelled video spec '{spec}' holds no videos.")
  labels.setflags(write=False)
  return LabeledVideos(spec, labels, class_names, image_size, resize_size,
                       videos)
