"""Labelled image datasets held in memory: the `dataset:` input sources.

Used instead of a single image when distilling with real training data (the
paper's full-dataset baseline) and for supervised teacher training. A source
is `dataset:` followed by any `labeled_data` spec (the reader eval sets use
too), e.g.

  dataset:folder:ROOT        ROOT/<class_name>/*.jpg|jpeg|png
  dataset:tar:PATH[:PREFIX]  the same layout inside a tar archive (.tar,
                             .tar.gz, .tgz) under the member folder PREFIX,
                             e.g. `dataset:tar:$SID_SHARED_DIR/data/cifar10/
                             train_jpeg.tar.gz`
  dataset:tfds:NAME:SPLIT    a TFDS dataset, e.g. `dataset:tfds:cifar10:train`,
                             prepared (downloaded) on first use
  dataset:npz:PATH, dataset:imagenet_folder:ROOT  as for eval sets.

Paths may use `$SID_SHARED_DIR` and `~` but not ':'. Folder and tar labels
are the index of the class folder in alphabetical order; examples are ordered
by (class, file name), whatever the order on disk. Without PREFIX a tar must
hold a single root of class folders (e.g. `CIFAR-10-images/train/<class>/`).

A suffix in Python slice syntax keeps a fixed subset of that order and `[~...]`
the other examples: `dataset:tar:...train_jpeg.tar.gz[~::10]` trains on 45,000
CIFAR-10 training images and leaves `tar:...train_jpeg.tar.gz[::10]` (every
10th, 500 per class) as a validation eval set.

The whole dataset is decoded once into uint8 [N, S, S, 3] (S = image_size):
meant for CIFAR-sized sets (50,000 32-px images = 150 MB), not ImageNet.
Images of another size are resized in uint8: shorter side to S (bicubic),
then centre crop S x S. A decoded tar is cached in
`<cache_dir>/dataset_<name>_<hash>.npz` (written atomically), keyed by the
archive's path, size and mtime, PREFIX, the subset and S. TensorFlow is
imported only by the tfds scheme.
"""

import dataclasses

import numpy as np

from input_pipeline import labeled_data

DATASET_PREFIX = "dataset:"


@dataclasses.dataclass(frozen=True)
class LabeledDataset:
  """A labelled image dataset decoded into memory.

  Attributes:
    name: the spec it was loaded from.
    images: uint8 [N, S, S, 3], read-only.
    labels: int32 [N], read-only.
    class_names: names indexed by label.
  """
  name: str
  images: np.ndarray = dataclasses.field(repr=False)
  labels: np.ndarray = dataclasses.field(repr=False)
  class_names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.labels)


def is_dataset_source(spec: str) -> bool:
  """Whether `spec` names a labelled dataset rather than one image."""
  return spec.startswith(DATASET_PREFIX)


def _check(spec: str) -> None:
  """Raises a ValueError listing the source forms unless `spec` has one."""
  scheme = spec[len(DATASET_PREFIX):].partition(":")[0]
  if not is_dataset_source(spec) or scheme not in labeled_data.SCHEMES:
    raise ValueError(
        f"Dataset source '{spec}' must be "
        f"{labeled_data.usage(DATASET_PREFIX)}.")


def index_dataset(spec: str) -> labeled_data.Index:
  """Lists the examples of a folder or tar dataset without decoding them.

  Args:
    spec: `dataset:folder:ROOT[subset]` or `dataset:tar:PATH[:PREFIX][subset]`.

  Returns:
    The files (or members), their labels and the class names.

  Raises:
    FileNotFoundError: the folder or archive does not exist, or holds no
      images in the expected layout.
    ValueError: a malformed spec, or a tar with several roots of class
      folders and no PREFIX.
  """
  _check(spec)
  return labeled_data.index(spec, DATASET_PREFIX)


def load_dataset(spec: str, image_size: int, *,
                 cache_dir: str | None = None) -> LabeledDataset:
  """Decodes the dataset named by `spec` (see the module docstring).

  Args:
    spec: a `dataset:` source.
    image_size: side S of the returned square images.
    cache_dir: where tar datasets are cached; `labeled_data.default_cache_dir()`
      if None.

  Returns:
    The dataset, images uint8 [N, S, S, 3].

  Raises:
    FileNotFoundError: a missing folder or archive, or a TFDS dataset that
      cannot be prepared.
    ValueError: malformed spec, an undecodable image, or a cache file of the
      wrong shape.
  """
  _check(spec)
  # Training keeps the whole (shorter-side) view: resize straight to S.
  source = labeled_data.open_source(
      spec, image_size=image_size, resize_size=image_size,
      prefix=DATASET_PREFIX, cache_dir=cache_dir)
  images, labels = source.read_all()
  class_names = source.class_names or tuple(
      str(i) for i in range(int(labels.max(initial=-1)) + 1))
  images.setflags(write=False)
  labels.setflags(write=False)
  return LabeledDataset(spec, images, labels, class_names)
