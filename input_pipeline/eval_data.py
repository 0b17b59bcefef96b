"""Labelled evaluation sets as fixed-shape, padded numpy batches.

`load_eval_set("scheme:argument", image_size=...)` with the schemes

  npz:PATH               keys `image` uint8 [N,H,W,3], `label` [N], optional
                         `class_names` [C]; decoded all at once.
  folder:ROOT            ROOT/<class_name>/*.jpg|jpeg|png; labels are the
                         alphabetical index of the class folder.
  imagenet_folder:ROOT   ROOT/images/<filename> listed in ROOT/labels.csv
                         (filename,synset,class_index,class_name); class names
                         from ROOT/imagenet_class_index.json when present.
  tfds:NAME:SPLIT        a prepared TFDS dataset, e.g. `tfds:cifar10:test`,
                         `tfds:imagenet2012:validation[:1000]`.

Paths may use `$SID_SHARED_DIR`. Folder and TFDS images are decoded lazily,
one batch at a time. TensorFlow is imported only by the tfds scheme.

Images that are not image_size x image_size get ImageNet-style
preprocessing: resize the shorter side to resize_size (bicubic), then centre
crop image_size. Batches are `{'image': float32 [B,H,W,3] in [0,1],
'label': int32 [B], 'mask': bool [B]}`; the last batch is zero-padded to B
with mask False, so the jitted eval step sees one shape and every example
counts exactly once.
"""

import concurrent.futures
import csv
import dataclasses
import json
import os
import pathlib
from typing import Callable, Iterator

from absl import logging
import numpy as np
from PIL import Image

from big_vision_sid import paths
from big_vision_sid.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# Yields unpadded (float32 images [n,H,W,3], int labels [n]) chunks, n <= the
# requested batch size.
ChunkReader = Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]]

SCHEMES = Registry("eval data scheme")


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """A labelled evaluation set.

  Attributes:
    name: the spec it was loaded from.
    num_examples: number of real (unpadded) examples.
    class_names: names indexed by label, or None when unknown.
    read_chunks: yields unpadded chunks of at most a given size; use
      `batches` instead.
  """
  name: str
  num_examples: int
  class_names: list[str] | None
  read_chunks: ChunkReader = dataclasses.field(repr=False)

  def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Yields padded batches covering every example exactly once."""
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}.")
    for images, labels in self.read_chunks(batch_size):
      count = len(labels)
      padding = batch_size - count
      mask = np.arange(batch_size) < count
      yield {
          "image": np.pad(images.astype(np.float32),
                          [(0, padding), (0, 0), (0, 0), (0, 0)]),
          "label": np.pad(np.asarray(labels, np.int32), [(0, padding)]),
          "mask": mask,
      }


def preprocess_image(
    image: Image.Image | np.ndarray, image_size: int, resize_size: int
) -> np.ndarray:
  """float32 [image_size, image_size, 3] in [0, 1] from a uint8/PIL RGB image.

  Args:
    image: uint8 [H, W, 3] array or PIL image (converted to RGB).
    image_size: output side.
    resize_size: shorter side before the centre crop; unused when the image
      already is image_size x image_size.

  Returns:
    The preprocessed image.
  """
  if isinstance(image, np.ndarray):
    if image.shape[:2] == (image_size, image_size):
      return image.astype(np.float32) / 255.0
    image = Image.fromarray(image)
  image = image.convert("RGB")
  width, height = image.size
  if (width, height) != (image_size, image_size):
    scale = resize_size / min(width, height)
    new_size = (max(resize_size, round(width * scale)),
                max(resize_size, round(height * scale)))
    image = image.resize(new_size, Image.BICUBIC)
    left = (new_size[0] - image_size) // 2
    top = (new_size[1] - image_size) // 2
    image = image.crop((left, top, left + image_size, top + image_size))
  return np.asarray(image, np.float32) / 255.0


def load_eval_set(
    spec: str,
    *,
    image_size: int,
    resize_size: int | None = None,
    max_examples: int | None = None,
) -> EvalSet:
  """Loads the eval set described by `spec` (see the module docstring).

  Args:
    spec: `scheme:argument`, e.g. `npz:$SID_SHARED_DIR/data/cifar10/test_exact.npz`.
    image_size: side of the square images the model expects.
    resize_size: shorter side before the centre crop; defaults to
      round(image_size / 0.875) (256 for 224).
    max_examples: keep only the first examples (smoke tests).

  Returns:
    The EvalSet.
  """
  scheme, separator, argument = spec.partition(":")
  if not separator or not argument:
    raise ValueError(
        f"Eval dataset spec '{spec}' must look like 'scheme:argument' with a "
        f"scheme in {', '.join(SCHEMES.names())}.")
  loader = SCHEMES.get(scheme)
  if resize_size is None:
    resize_size = round(image_size / 0.875)
  if resize_size < image_size:
    raise ValueError(f"resize_size={resize_size} is smaller than "
                     f"image_size={image_size}: the centre crop would not fit.")
  if max_examples is not None and max_examples <= 0:
    raise ValueError(f"max_examples must be positive, got {max_examples}.")
  return loader(spec, argument, image_size=image_size,
                resize_size=resize_size, max_examples=max_examples)


def _existing_path(argument: str, spec: str) -> pathlib.Path:
  path = pathlib.Path(paths.expand(argument))
  if not path.exists():
    raise FileNotFoundError(f"Eval dataset '{spec}': {path} does not exist.")
  return path


def _indexed_chunks(
    num_examples: int,
    load_range: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
) -> ChunkReader:
  def read_chunks(batch_size):
    for start in range(0, num_examples, batch_size):
      yield load_range(start, min(start + batch_size, num_examples))
  return read_chunks


def _file_chunks(
    files: list[pathlib.Path], labels: np.ndarray, image_size: int,
    resize_size: int,
) -> ChunkReader:
  """Decodes image files batch by batch; PIL releases the GIL while decoding."""
  def decode(path):
    with Image.open(path) as image:
      return preprocess_image(image, image_size, resize_size)

  def load_range(start, stop):
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
      images = list(pool.map(decode, files[start:stop]))
    return np.stack(images), labels[start:stop]
  return _indexed_chunks(len(files), load_range)


def _truncate(count: int, max_examples: int | None) -> int:
  return count if max_examples is None else min(count, max_examples)


@SCHEMES.register("npz")
def _load_npz(spec, argument, *, image_size, resize_size, max_examples):
  path = _existing_path(argument, spec)
  with np.load(path, allow_pickle=False) as data:
    missing = {"image", "label"} - set(data.files)
    if missing:
      raise KeyError(f"{path} lacks key(s) {sorted(missing)}; it has "
                     f"{sorted(data.files)}.")
    images, labels = data["image"], data["label"]
    class_names = ([str(n) for n in data["class_names"]]
                   if "class_names" in data.files else None)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"{path}: 'image' must be uint8 [N,H,W,3], got "
                     f"{images.dtype} {images.shape}.")
  if labels.shape != images.shape[:1]:
    raise ValueError(f"{path}: 'label' shape {labels.shape} does not match "
                     f"{images.shape[0]} images.")
  num_examples = _truncate(len(labels), max_examples)

  def load_range(start, stop):
    if images.shape[1:3] == (image_size, image_size):
      return images[start:stop].astype(np.float32) / 255.0, labels[start:stop]
    chunk = [preprocess_image(image, image_size, resize_size)
             for image in images[start:stop]]
    return np.stack(chunk), labels[start:stop]

  return EvalSet(spec, num_examples, class_names,
                 _indexed_chunks(num_examples, load_range))


@SCHEMES.register("folder")
def _load_folder(spec, argument, *, image_size, resize_size, max_examples):
  root = _existing_path(argument, spec)
  class_names = sorted(d.name for d in root.iterdir() if d.is_dir())
  files, labels = [], []
  for label, class_name in enumerate(class_names):
    class_files = sorted(
        f for f in (root / class_name).iterdir()
        if f.suffix.lower() in IMAGE_EXTENSIONS)
    files += class_files
    labels += [label] * len(class_files)
  if not files:
    raise FileNotFoundError(
        f"Eval dataset '{spec}': no {'/'.join(IMAGE_EXTENSIONS)} images in "
        f"class sub-folders of {root} (expected {root}/<class_name>/*.jpg).")
  num_examples = _truncate(len(files), max_examples)
  return EvalSet(
      spec, num_examples, class_names,
      _file_chunks(files[:num_examples], np.asarray(labels[:num_examples]),
                   image_size, resize_size))


@SCHEMES.register("imagenet_folder")
def _load_imagenet_folder(spec, argument, *, image_size, resize_size,
                          max_examples):
  root = _existing_path(argument, spec)
  labels_csv = root / "labels.csv"
  if not labels_csv.exists():
    raise FileNotFoundError(
        f"Eval dataset '{spec}': {labels_csv} is missing (expected columns "
        "filename,synset,class_index,class_name).")
  with open(labels_csv, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows or not {"filename", "class_index"} <= set(rows[0]):
    raise ValueError(f"{labels_csv} needs a header with 'filename' and "
                     "'class_index' and at least one row.")
  rows = rows[:_truncate(len(rows), max_examples)]
  files = [root / "images" / row["filename"] for row in rows]
  missing = [str(f) for f in files if not f.exists()]
  if missing:
    raise FileNotFoundError(
        f"Eval dataset '{spec}': {len(missing)} image(s) listed in "
        f"{labels_csv} are missing, e.g. {missing[0]}.")
  labels = np.asarray([int(row["class_index"]) for row in rows])
  class_names = None
  class_index_json = root / "imagenet_class_index.json"
  if class_index_json.exists():
    index = json.loads(class_index_json.read_text())
    class_names = [index[str(i)][1] for i in range(len(index))]
  return EvalSet(spec, len(files), class_names,
                 _file_chunks(files, labels, image_size, resize_size))


@SCHEMES.register("tfds")
def _load_tfds(spec, argument, *, image_size, resize_size, max_examples):
  # The split may itself contain ':' (e.g. 'test[:100]').
  name, _, split = argument.partition(":")
  if not name or not split:
    raise ValueError(f"Eval dataset spec '{spec}' must be 'tfds:NAME:SPLIT', "
                     "e.g. 'tfds:cifar10:test'.")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # TFDS reads TFDS_DATA_DIR once at import; read it per call instead.
  builder = tfds.builder(name, data_dir=os.environ.get("TFDS_DATA_DIR"))
  if not builder.is_prepared():
    try:  # Datasets like cifar10 download themselves; imagenet2012 cannot.
      logging.info("Preparing TFDS dataset %s in %s (downloads it once).",
                   name, builder.data_dir)
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except
      raise FileNotFoundError(
          f"TFDS dataset '{name}' is not prepared in {builder.data_dir} and "
          f"preparing it failed ({type(e).__name__}: {str(e)[:200]}). On a "
          f"machine with internet run `tfds build {name}` (imagenet2012 first "
          "needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
          "<data_dir>/downloads/manual/), or set TFDS_DATA_DIR to a prepared "
          "copy; offline, use an npz:/folder:/imagenet_folder: spec instead, "
          "e.g. npz:$SID_SHARED_DIR/data/cifar10/test_exact.npz.") from e
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"TFDS dataset '{name}' is not prepared in {builder.data_dir}. On a "
        f"machine with internet run `tfds build {name}` (imagenet2012 first "
        "needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
        "<data_dir>/downloads/manual/), or set TFDS_DATA_DIR to a prepared "
        "copy; offline, use an npz:/folder:/imagenet_folder: spec instead, "
        "e.g. npz:$SID_SHARED_DIR/data/cifar10/test_exact.npz.")
  num_examples = _truncate(builder.info.splits[split].num_examples,
                           max_examples)
  label_feature = builder.info.features["label"]
  class_names = list(getattr(label_feature, "names", None) or []) or None

  def read_chunks(batch_size):
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    examples = tfds.as_numpy(dataset.take(num_examples))
    images, labels = [], []
    for example in examples:
      images.append(preprocess_image(example["image"], image_size,
                                     resize_size))
      labels.append(example["label"])
      if len(labels) == batch_size:
        yield np.stack(images), np.asarray(labels)
        images, labels = [], []
    if labels:
      yield np.stack(images), np.asarray(labels)

  return EvalSet(spec, num_examples, class_names, read_chunks)
