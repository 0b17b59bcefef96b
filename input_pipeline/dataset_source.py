"""Labelled image datasets held in memory: the `dataset:` input sources.

Used instead of a single image when distilling with real training data (the
paper's full-dataset baseline) and for supervised teacher training. Specs:

  dataset:folder:ROOT        ROOT/<class_name>/*.jpg|jpeg|png
  dataset:tar:PATH[:PREFIX]  the same layout inside a tar archive (.tar,
                             .tar.gz, .tgz) under the member folder PREFIX,
                             e.g. `dataset:tar:$SID_SHARED_DIR/data/cifar10/
                             train_jpeg.tar.gz`
  dataset:tfds:NAME:SPLIT    a prepared TFDS dataset, e.g.
                             `dataset:tfds:cifar10:train`

Paths may use `$SID_SHARED_DIR` and `~` but not ':'. Folder and tar labels
are the index of the class folder in alphabetical order; examples are ordered
by (class, file name), whatever the order on disk. Without PREFIX a tar must
hold a single root of class folders (e.g. `CIFAR-10-images/train/<class>/`).

The whole dataset is decoded once into uint8 [N, S, S, 3] (S = image_size):
meant for CIFAR-sized sets (50,000 32-px images = 150 MB), not ImageNet.
Images of another size get `eval_data.preprocess_image`'s resize (shorter side
to S, bicubic, then centre crop S x S). Decoding a tar is slow (tens of
seconds for 50,000 JPEGs), so its result is cached in
`<cache_dir>/dataset_<name>_<hash>.npz` (written atomically), keyed by the
archive's path, size and mtime, PREFIX and S. TensorFlow is imported only by
the tfds scheme.
"""

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import tarfile
import tempfile

from absl import logging
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

from big_vision_sid import paths
from input_pipeline import eval_data

DATASET_PREFIX = "dataset:"
SCHEMES = ("folder", "tar", "tfds")
IMAGE_EXTENSIONS = eval_data.IMAGE_EXTENSIONS
# Bump when decoding changes, so that stale caches are not reused.
_CACHE_FORMAT = 1
_DEFAULT_CACHE_DIR = "~/.cache/big_vision_sid"


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


@dataclasses.dataclass(frozen=True)
class DatasetIndex:
  """What a folder or tar dataset holds, found without decoding any image.

  Attributes:
    files: file paths (folder) or member names (tar), in example order.
    labels: int32 [N].
    class_names: names indexed by label.
  """
  files: list[str]
  labels: np.ndarray
  class_names: tuple[str, ...]


def is_dataset_source(spec: str) -> bool:
  """Whether `spec` names a labelled dataset rather than one image."""
  return spec.startswith(DATASET_PREFIX)


def default_cache_dir() -> str:
  """Where decoded tar datasets are cached unless a cache_dir is given."""
  return os.path.expanduser(_DEFAULT_CACHE_DIR)


def _parse(spec: str) -> tuple[str, str, str]:
  """Splits `dataset:SCHEME:ARG[:EXTRA]` into (scheme, expanded ARG, EXTRA)."""
  if not is_dataset_source(spec):
    raise ValueError(f"'{spec}' is not a dataset source (expected "
                     f"'{DATASET_PREFIX}<scheme>:...', scheme in {SCHEMES}).")
  scheme, _, rest = spec[len(DATASET_PREFIX):].partition(":")
  argument, _, extra = rest.partition(":")
  if scheme not in SCHEMES or not argument:
    raise ValueError(
        f"Dataset source '{spec}' must be dataset:folder:ROOT, "
        "dataset:tar:PATH[:PREFIX] or dataset:tfds:NAME:SPLIT.")
  if scheme == "tfds":
    if not extra:
      raise ValueError(
          f"Dataset source '{spec}' needs a split: dataset:tfds:NAME:SPLIT, "
          "e.g. dataset:tfds:cifar10:train.")
    return scheme, argument, extra
  return scheme, paths.expand(argument), extra


def index_dataset(spec: str) -> DatasetIndex:
  """Lists the examples of a folder or tar dataset without decoding them.

  Args:
    spec: `dataset:folder:ROOT` or `dataset:tar:PATH[:PREFIX]`.

  Returns:
    The files (or members), their labels and the class names.

  Raises:
    FileNotFoundError: the folder or archive does not exist, or holds no
      images in the expected layout.
    ValueError: a malformed spec, or a tar with several roots of class
      folders and no PREFIX.
  """
  scheme, path, prefix = _parse(spec)
  if scheme == "folder":
    return _index_folder(spec, path)
  if scheme == "tar":
    _check_file(spec, path)
    return _index_members(spec, _tar_image_members(path), prefix)
  raise ValueError(f"index_dataset reads folder and tar sources, not '{spec}'.")


def load_dataset(spec: str, image_size: int, *,
                 cache_dir: str | None = None) -> LabeledDataset:
  """Decodes the dataset named by `spec` (see the module docstring).

  Args:
    spec: a `dataset:` source.
    image_size: side S of the returned square images.
    cache_dir: where tar datasets are cached; `default_cache_dir()` if None.

  Returns:
    The dataset, images uint8 [N, S, S, 3].

  Raises:
    FileNotFoundError: missing folder, archive or unprepared TFDS dataset.
    ValueError: malformed spec, an undecodable image, or a cache file of the
      wrong shape.
  """
  if image_size <= 0:
    raise ValueError(f"image_size must be positive, got {image_size}.")
  scheme, argument, extra = _parse(spec)
  if scheme == "folder":
    index = _index_folder(spec, argument)
    images = _decode_files(index.files, image_size)
    dataset = LabeledDataset(spec, images, index.labels, index.class_names)
  elif scheme == "tar":
    dataset = _load_tar_cached(spec, argument, extra, image_size,
                               cache_dir or default_cache_dir())
  else:
    dataset = _load_tfds(spec, argument, extra, image_size)
  dataset.images.setflags(write=False)
  dataset.labels.setflags(write=False)
  return dataset


def _check_file(spec: str, path: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Dataset source '{spec}': {path} does not exist.")


def _is_image_name(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def _labelled(spec: str, class_files: dict[str, list[str]],
              where: str) -> DatasetIndex:
  """Orders examples by (class, file name); labels are sorted class indices."""
  class_names = tuple(sorted(name for name, files in class_files.items()
                             if files))
  if not class_names:
    raise FileNotFoundError(
        f"Dataset source '{spec}': no {'/'.join(IMAGE_EXTENSIONS)} images in "
        f"class folders of {where} (expected <root>/<class_name>/<image>).")
  files, labels = [], []
  for label, class_name in enumerate(class_names):
    names = sorted(class_files[class_name])
    files += names
    labels += [label] * len(names)
  return DatasetIndex(files, np.asarray(labels, np.int32), class_names)


def _index_folder(spec: str, root: str) -> DatasetIndex:
  root_path = pathlib.Path(root)
  if not root_path.is_dir():
    raise FileNotFoundError(f"Dataset source '{spec}': {root} is not a folder.")
  class_files = {
      d.name: [str(f) for f in d.iterdir() if _is_image_name(f.name)]
      for d in root_path.iterdir() if d.is_dir()}
  return _labelled(spec, class_files, root)


def _tar_image_members(path: str, with_data: bool = False
                       ) -> dict[str, bytes | None]:
  """Image member name -> bytes (None unless with_data), in one pass."""
  members = {}
  try:
    # Streaming mode reads a .tar.gz once, front to back.
    with tarfile.open(path, "r|*") as archive:
      for member in archive:
        if member.isfile() and _is_image_name(member.name):
          data = None
          if with_data:
            data = archive.extractfile(member).read()
          members[member.name] = data
  except (tarfile.TarError, OSError, EOFError) as e:
    raise ValueError(f"Cannot read tar archive {path}: {e}") from e
  return members


def _index_members(spec: str, names, prefix: str) -> DatasetIndex:
  """Indexes `<root>/<class>/<image>` members; root = PREFIX or inferred."""
  prefix = prefix.strip("/")
  class_files: dict[str, list[str]] = {}
  roots = set()
  for name in names:
    parts = name.strip("/").split("/")
    if len(parts) < 2:
      continue
    root = "/".join(parts[:-2])
    if prefix and root != prefix:
      continue
    roots.add(root)
    class_files.setdefault(parts[-2], []).append(name)
  if len(roots) > 1:
    raise ValueError(
        f"Dataset source '{spec}' holds class folders under several roots "
        f"{sorted(roots)}; pick one with dataset:tar:PATH:<root>.")
  where = f"member folder '{prefix}'" if prefix else "the archive"
  return _labelled(spec, class_files, where)


def _decode(data: bytes | str, name: str, image_size: int) -> np.ndarray:
  """uint8 [S, S, 3] from encoded bytes or a file path."""
  source = io.BytesIO(data) if isinstance(data, bytes) else data
  try:
    with Image.open(source) as image:
      image = image.convert("RGB")
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"Cannot decode image {name}: {e}") from e
  if image.size == (image_size, image_size):
    return np.asarray(image, np.uint8)
  resized = eval_data.preprocess_image(image, image_size, image_size)
  # preprocess_image returns k / 255 in float32, which rounds back exactly.
  return np.round(resized * 255.0).astype(np.uint8)


def _decode_all(items: list[tuple[bytes | str, str]],
                image_size: int) -> np.ndarray:
  images = np.empty((len(items), image_size, image_size, 3), np.uint8)
  # PIL releases the GIL while decoding.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    decoded = pool.map(lambda item: _decode(*item, image_size), items)
    for i, image in enumerate(decoded):
      images[i] = image
  return images


def _decode_files(files: list[str], image_size: int) -> np.ndarray:
  return _decode_all([(f, f) for f in files], image_size)


def _decode_tar(spec: str, path: str, prefix: str,
                image_size: int) -> LabeledDataset:
  members = _tar_image_members(path, with_data=True)
  index = _index_members(spec, members, prefix)
  images = _decode_all([(members[name], f"{path}:{name}")
                        for name in index.files], image_size)
  return LabeledDataset(spec, images, index.labels, index.class_names)


def _tar_cache_path(path: str, prefix: str, image_size: int,
                    cache_dir: str) -> str:
  stat = os.stat(path)
  key = json.dumps({
      "format": _CACHE_FORMAT, "path": os.path.abspath(path),
      "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
      "prefix": prefix.strip("/"), "image_size": image_size,
  }, sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  stem = os.path.basename(path).split(".")[0] or "archive"
  return os.path.join(cache_dir, f"dataset_{stem}_{digest}.npz")


def _load_tar_cached(spec: str, path: str, prefix: str, image_size: int,
                     cache_dir: str) -> LabeledDataset:
  _check_file(spec, path)
  cache_dir = paths.expand(cache_dir)
  cache_path = _tar_cache_path(path, prefix, image_size, cache_dir)
  if os.path.exists(cache_path):
    return _read_cache(spec, cache_path, image_size)
  logging.info("Decoding %s once; caching it in %s.", path, cache_path)
  dataset = _decode_tar(spec, path, prefix, image_size)
  try:
    os.makedirs(cache_dir, exist_ok=True)
    # Write next to the target, then rename: readers never see a partial file.
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npz.tmp",
                                     delete=False) as f:
      np.savez(f, image=dataset.images, label=dataset.labels,
               class_names=np.asarray(dataset.class_names))
    os.replace(f.name, cache_path)
  except OSError as e:  # A read-only home must not stop training.
    logging.warning("Could not cache %s in %s: %s", path, cache_dir, e)
  return dataset


def _read_cache(spec: str, cache_path: str, image_size: int) -> LabeledDataset:
  with np.load(cache_path, allow_pickle=False) as data:
    images, labels = data["image"], data["label"]
    class_names = tuple(str(n) for n in data["class_names"])
  expected = (image_size, image_size, 3)
  if (images.dtype != np.uint8 or images.shape[1:] != expected or
      labels.shape != images.shape[:1]):
    raise ValueError(
        f"Dataset cache {cache_path} holds {images.dtype}{images.shape} images"
        f" and {labels.shape} labels, expected uint8[N,{image_size},"
        f"{image_size},3] and [N]; delete it to rebuild.")
  return LabeledDataset(spec, images, labels.astype(np.int32), class_names)


def _load_tfds(spec: str, name: str, split: str,
               image_size: int) -> LabeledDataset:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # TFDS reads TFDS_DATA_DIR once at import; read it per call instead.
  builder = tfds.builder(name, data_dir=os.environ.get("TFDS_DATA_DIR"))
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"Dataset source '{spec}': TFDS dataset '{name}' is not prepared in "
        f"{builder.data_dir}. On a machine with internet run `tfds build "
        f"{name}`, or set TFDS_DATA_DIR to a prepared copy; offline, use "
        "dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz.")
  data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1,
                                          shuffle_files=False))
  images, labels = data["image"], np.asarray(data["label"], np.int32)
  if images.shape[1:] != (image_size, image_size, 3):
    images = np.stack([
        np.round(eval_data.preprocess_image(image, image_size, image_size)
                 * 255.0).astype(np.uint8) for image in images])
  names = getattr(builder.info.features["label"], "names", None)
  class_names = tuple(names) if names else tuple(
      str(i) for i in range(int(labels.max(initial=-1)) + 1))
  return LabeledDataset(spec, np.asarray(images, np.uint8), labels,
                        class_names)
