"""Labelled evaluation sets as fixed-shape, padded numpy batches.

`load_eval_set("scheme:argument[subset]", image_size=...)` reads any spec of
`labeled_data` (one reader for eval sets and training sources):

  npz:PATH               keys `image` uint8 [N,H,W,3], `label` [N], optional
                         `class_names` [C]; decoded all at once.
  folder:ROOT            ROOT/<class_name>/*.jpg|jpeg|png; labels are the
                         alphabetical index of the class folder.
  imagenet_folder:ROOT   ROOT/images/<filename> listed in ROOT/labels.csv
                         (filename,synset,class_index,class_name); class names
                         from ROOT/imagenet_class_index.json when present.
  tar:PATH[:PREFIX]      the folder layout inside a tar archive, decoded once
                         and cached.
  tfds:NAME:SPLIT        a TFDS dataset, e.g. `tfds:cifar10:test`,
                         `tfds:imagenet2012:validation[:1000]`; prepared
                         (downloaded) on first use.

A suffix `[start:stop:step]` (Python slice syntax, over the (class, file
name)-ordered examples of a folder or tar) keeps a fixed subset and
`[~start:stop:step]` the other examples: choose recipes on
`tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz[::10]` (5,000 training
images, 500 per class) while training on `dataset:tar:...[~::10]`, without
touching test images. Paths may use `$SID_SHARED_DIR`. Folder, imagenet_folder
and TFDS images are decoded lazily, one batch at a time. TensorFlow is
imported only by the tfds scheme.

`audio:npz:...`, `audio:folder:...` and `audio:tfds:...` name labelled audio
clips instead (input_pipeline/audio/labeled.py), for the `audio_segments`
evaluator; `video:folder:...` and `video:tfds:...` labelled videos
(input_pipeline/video/labeled.py), for the `video_clips` evaluator.

Images that are not image_size x image_size get ImageNet-style
preprocessing: resize the shorter side to resize_size (bicubic), then centre
crop image_size (in uint8). Batches are `{'image': float32 [B,H,W,3] in [0,1],
'label': int32 [B], 'mask': bool [B]}`; the last batch is zero-padded to B
with mask False, so the jitted eval step sees one shape and every example
counts exactly once.
"""

import dataclasses
from typing import Iterator

import numpy as np
from PIL import Image

from input_pipeline import labeled_data
from input_pipeline.audio import labeled as audio_labeled
from input_pipeline.video import labeled as video_labeled


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """A labelled evaluation set.

  Attributes:
    name: the spec it was loaded from.
    num_examples: number of real (unpadded) examples.
    class_names: names indexed by label, or None when unknown.
    read_chunks: yields unpadded uint8 chunks of at most a given size; use
      `batches` instead.
  """
  name: str
  num_examples: int
  class_names: list[str] | None
  read_chunks: labeled_data.ChunkReader = dataclasses.field(repr=False)

  def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Yields padded batches covering every example exactly once."""
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}.")
    for images, labels in self.read_chunks(batch_size):
      count = len(labels)
      padding = batch_size - count
      mask = np.arange(batch_size) < count
      yield {
          "image": np.pad(_to_float(images),
                          [(0, padding), (0, 0), (0, 0), (0, 0)]),
          "label": np.pad(np.asarray(labels, np.int32), [(0, padding)]),
          "mask": mask,
      }


def _to_float(images: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [0, 1]; the models' input range."""
  return images.astype(np.float32) / 255.0


def preprocess_image(
    image: Image.Image | np.ndarray, image_size: int, resize_size: int
) -> np.ndarray:
  """One image as the eval batches hold it: float32 [S, S, 3] in [0, 1].

  Args:
    image: uint8 [H, W, 3] array or PIL image (converted to RGB).
    image_size: output side.
    resize_size: shorter side before the centre crop; unused when the image
      already is image_size x image_size.

  Returns:
    The preprocessed image.
  """
  if isinstance(image, np.ndarray):
    pixels = labeled_data.resize_array(image, image_size, resize_size)
  else:
    pixels = labeled_data.resize_and_crop(image, image_size, resize_size)
  return _to_float(pixels)


def load_eval_set(
    spec: str,
    *,
    image_size: int,
    resize_size: int | None = None,
    max_examples: int | None = None,
    cache_dir: str | None = None,
) -> EvalSet | audio_labeled.LabeledClips | video_labeled.LabeledVideos:
  """Loads the eval set described by `spec` (see the module docstring).

  Args:
    spec: `scheme:argument`, e.g. `npz:$SID_SHARED_DIR/data/cifar10/test_exact.npz`.
    image_size: side of the square images the model expects.
    resize_size: shorter side before the centre crop; defaults to
      round(image_size / 0.875) (256 for 224).
    max_examples: keep only the first examples (smoke tests).
    cache_dir: where decoded tar sets are cached; the `labeled_data` default
      if None.

  Returns:
    The EvalSet; labelled clips for an `audio:` spec, labelled videos for a
    `video:` spec.
  """
  if spec.startswith(audio_labeled.PREFIX):
    return audio_labeled.load(spec, max_examples)
  if spec.startswith(video_labeled.PREFIX):
    return video_labeled.load(spec, image_size=image_size,
                              resize_size=resize_size,
                              max_examples=max_examples)
  scheme, separator, argument = spec.partition(":")
  names = ", ".join(labeled_data.SCHEMES.names())
  if not separator or not argument:
    raise ValueError(
        f"Eval dataset spec '{spec}' must look like 'scheme:argument' with a "
        f"scheme in {names}.")
  if scheme not in labeled_data.SCHEMES:
    raise KeyError(f"Unknown eval data scheme '{scheme}'. Known: {names}.")
  if resize_size is None:
    resize_size = round(image_size / 0.875)
  source = labeled_data.open_source(
      spec, image_size=image_size, resize_size=resize_size,
      max_examples=max_examples, cache_dir=cache_dir)
  class_names = list(source.class_names) if source.class_names else None
  return EvalSet(spec, source.num_examples, class_names, source.read_chunks)
