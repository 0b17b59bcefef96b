"""The one reader of labelled image data: training sources and eval sets.

`open_source(spec, image_size=S, resize_size=R)` lists the examples a spec
names and decodes them, chunk by chunk, to uint8 [n, S, S, 3] with int32
labels. `eval_data` (eval sets) and `dataset_source` (the `dataset:` training
sources) both read through it. Schemes (`SCHEMES`):

  npz:PATH               keys `image` uint8 [N,H,W,3], `label` [N], optional
                         `class_names` [C].
  folder:ROOT            ROOT/<class_name>/*.jpg|jpeg|png.
  imagenet_folder:ROOT   ROOT/images/<filename> listed in ROOT/labels.csv
                         (filename,synset,class_index,class_name); class names
                         from ROOT/imagenet_class_index.json when present.
  tar:PATH[:PREFIX]      the folder layout inside a tar archive (.tar, .tar.gz,
                         .tgz) under the member folder PREFIX, e.g.
                         `tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz`;
                         without PREFIX the archive must hold a single root of
                         class folders (e.g. `CIFAR-10-images/train/<class>/`).
  tfds:NAME:SPLIT        a TFDS dataset, e.g. `tfds:cifar10:test`, with TFDS's
                         own split slicing, e.g. `tfds:imagenet2012:
                         validation[:1000]`.

Paths may use `$SID_SHARED_DIR` and `~` but not ':'. Folder and tar labels
are the alphabetical index of the class folders that hold images; examples
are ordered by (class, file name), whatever the order on disk. npz and
imagenet_folder examples keep the file's order.

Fixed subsets (a validation split): every scheme but tfds takes a suffix in
Python slice syntax over that example order. `[start:stop:step]` keeps those
examples and `[~start:stop:step]` all the others, so `SPEC[::10]` (every 10th
example: about a tenth of every class, the validation set) and `SPEC[~::10]`
(the rest, to train on) are disjoint and together hold every example once.
E.g. `tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz[::10]` is 5,000
CIFAR-10 training images, 500 per class.

Images of another size than S x S are resized, in uint8: the shorter side to
R (bicubic), then a centre crop S x S. Folder, imagenet_folder and tfds images
are decoded lazily, one chunk at a time. A tar is read once, front to back,
and decoded whole (meant for CIFAR-sized sets); the result is cached in
`<cache_dir>/dataset_<name>_<hash>.npz`, keyed by the archive's path, size and
mtime, PREFIX, the subset, S and R.

TFDS datasets are prepared on first use (downloaded where the network allows
it, to TFDS_DATA_DIR or ~/tensorflow_datasets); when that fails (within
seconds when a download host does not answer) the error is one line naming
the dataset, the data dir and the offline alternatives.
TensorFlow is imported only by the tfds scheme.
"""

import concurrent.futures
import csv
import dataclasses
import io
import json
import os
import pathlib
import re
import tarfile
from typing import Callable, Iterator, Sequence
import urllib.parse

from absl import logging
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

import input_pipeline
from big_vision_sid import paths
from big_vision_sid import workdir
from big_vision_sid.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Bump when decoding changes, so that stale tar caches are not reused.
_CACHE_FORMAT = 1
_DEFAULT_CACHE_DIR = "~/.cache/big_vision_sid"
_SUBSET = re.compile(r"(~?)(-?\d*):(-?\d*)(?::(-?\d*))?")
# Offline, TFDS's downloader retries for minutes before it gives up.
_PROBE_TIMEOUT_S = 10.0

# Yields (uint8 images [n,S,S,3], int32 labels [n]) chunks, n <= the size asked.
ChunkReader = Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class Subset:
  """A fixed subset of examples: a Python slice, or everything but it.

  Attributes:
    start, stop, step: the slice's bounds, None where omitted.
    complement: keep the examples the slice does not.
  """
  start: int | None
  stop: int | None
  step: int | None
  complement: bool = False

  @classmethod
  def parse(cls, text: str, spec: str) -> "Subset":
    """`::10` or `~::10` (the text between the brackets) -> Subset."""
    match = _SUBSET.fullmatch(text)
    if not match:
      raise ValueError(
          f"Subset '[{text}]' of '{spec}' must be a Python slice "
          "[start:stop:step], or [~start:stop:step] for the other examples, "
          "e.g. [::10] and [~::10].")
    complement, *bounds = match.groups()
    start, stop, step = (int(b) if b else None for b in bounds)
    if step == 0:
      raise ValueError(f"Subset '[{text}]' of '{spec}' has step 0.")
    return cls(start, stop, step, bool(complement))

  def __str__(self) -> str:
    bounds = [self.start, self.stop] + ([self.step] if self.step else [])
    text = ":".join("" if b is None else str(b) for b in bounds)
    return f"[{'~' if self.complement else ''}{text}]"

  def indices(self, num: int) -> np.ndarray:
    """The kept positions among `num` examples, in example order."""
    chosen = np.arange(num)[slice(self.start, self.stop, self.step)]
    if self.complement:
      return np.setdiff1d(np.arange(num), chosen)
    return chosen


@dataclasses.dataclass(frozen=True)
class Spec:
  """A parsed spec.

  Attributes:
    text: the spec as given (for messages).
    prefix: what precedes the scheme in `text` (e.g. 'dataset:').
    scheme: a `SCHEMES` name.
    argument: what follows 'scheme:', without the subset suffix.
    subset: the suffix's subset, or None for every example.
  """
  text: str
  prefix: str
  scheme: str
  argument: str
  subset: Subset | None


@dataclasses.dataclass(frozen=True)
class Index:
  """The examples of a folder or tar dataset, found without decoding them.

  Attributes:
    files: file paths (folder) or member names (tar), in example order.
    labels: int32 [N].
    class_names: names indexed by label.
  """
  files: list[str]
  labels: np.ndarray
  class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Source:
  """Labelled examples, decoded on demand.

  Attributes:
    spec: the spec it was opened from.
    num_examples: number of examples.
    class_names: names indexed by label, or None when unknown.
    read_chunks: yields uint8 [n,S,S,3] images and int32 [n] labels, n at
      most the given size, covering every example once, in order.
  """
  spec: str
  num_examples: int
  class_names: tuple[str, ...] | None
  read_chunks: ChunkReader = dataclasses.field(repr=False)

  def read_all(self) -> tuple[np.ndarray, np.ndarray]:
    """All images uint8 [N,S,S,3] and labels int32 [N], decoded at once."""
    (chunk,) = self.read_chunks(self.num_examples)
    return chunk


@dataclasses.dataclass(frozen=True)
class _Options:
  """How to decode: image side, resize side, example limit, tar cache."""
  image_size: int
  resize_size: int
  max_examples: int | None
  cache_dir: str


@dataclasses.dataclass(frozen=True)
class Scheme:
  """A registered scheme: its usage line and its opener."""
  usage: str
  open: Callable[[Spec, _Options], Source]


SCHEMES = Registry("labelled data scheme")


def _scheme(name: str, form: str):
  def register(opener):
    SCHEMES.register(name)(Scheme(form, opener))
    return opener
  return register


def usage(prefix: str = "") -> str:
  """'npz:PATH, folder:ROOT, ...': the spec forms, each with `prefix`."""
  return ", ".join(prefix + SCHEMES.get(n).usage for n in SCHEMES.names())


def default_cache_dir() -> str:
  """Where decoded tar datasets are cached unless a cache_dir is given."""
  return os.path.expanduser(_DEFAULT_CACHE_DIR)


def parse(spec: str, prefix: str = "") -> Spec:
  """Splits `PREFIX SCHEME:ARGUMENT[SUBSET]` (see the module docstring).

  Args:
    spec: the spec.
    prefix: a prefix `spec` must start with, e.g. 'dataset:'.

  Returns:
    The parsed spec; its scheme may be unknown (`SCHEMES.get` says so).

  Raises:
    ValueError: no prefix, no 'scheme:argument', or a malformed subset.
  """
  if not spec.startswith(prefix):
    raise ValueError(f"'{spec}' does not start with '{prefix}'.")
  scheme, separator, argument = spec[len(prefix):].partition(":")
  if not separator or not argument:
    raise ValueError(
        f"Data spec '{spec}' must look like '{prefix}scheme:argument' with a "
        f"scheme in {', '.join(SCHEMES.names())}.")
  subset = None
  opening = argument.rfind("[")
  if argument.endswith("]") and opening >= 0:
    text = argument[opening + 1:-1]
    if scheme == "tfds":
      if text.startswith("~") or text.count(":") == 2:
        raise ValueError(
            f"Data spec '{spec}': TFDS splits take TFDS slicing (e.g. "
            "train[:10%], train[10%:]), not steps or '~'.")
    else:
      subset = Subset.parse(text, spec)
      argument = argument[:opening]
  return Spec(spec, prefix, scheme, argument, subset)


def open_source(
    spec: str,
    *,
    image_size: int,
    resize_size: int,
    prefix: str = "",
    max_examples: int | None = None,
    cache_dir: str | None = None,
) -> Source:
  """Opens the labelled data named by `spec` (see the module docstring).

  Args:
    spec: `[prefix]scheme:argument[subset]`.
    image_size: side S of the decoded square images.
    resize_size: shorter side R before the centre crop, >= S.
    prefix: what `spec` starts with before the scheme, e.g. 'dataset:'.
    max_examples: keep only the first examples (after the subset).
    cache_dir: where decoded tar datasets are cached; `default_cache_dir()`
      if None.

  Returns:
    The Source.

  Raises:
    KeyError: an unknown scheme.
    FileNotFoundError: a missing file or folder, a folder without images, or
      a TFDS dataset that is not prepared and cannot be prepared.
    ValueError: a malformed spec or file, or an undecodable image.
  """
  if image_size <= 0:
    raise ValueError(f"image_size must be positive, got {image_size}.")
  if resize_size < image_size:
    raise ValueError(f"resize_size={resize_size} is smaller than "
                     f"image_size={image_size}: the centre crop would not fit.")
  if max_examples is not None and max_examples <= 0:
    raise ValueError(f"max_examples must be positive, got {max_examples}.")
  parsed = parse(spec, prefix)
  scheme = SCHEMES.get(parsed.scheme)
  options = _Options(image_size, resize_size, max_examples,
                     paths.expand(cache_dir or default_cache_dir()))
  return scheme.open(parsed, options)


def index(spec: str, prefix: str = "") -> Index:
  """Lists a folder or tar dataset's (subset of) examples without decoding.

  Args:
    spec: `[prefix]folder:ROOT[subset]` or `[prefix]tar:PATH[:PREFIX][subset]`.
    prefix: what `spec` starts with before the scheme.

  Returns:
    The files (or members), their labels and the class names.

  Raises:
    FileNotFoundError: the folder or archive does not exist, or holds no
      images in the expected layout.
    ValueError: another scheme, a malformed spec, or a tar with several roots
      of class folders and no PREFIX.
  """
  parsed = parse(spec, prefix)
  if parsed.scheme == "folder":
    full = index_folder(parsed.text, paths.expand(parsed.argument))
  elif parsed.scheme == "tar":
    path, member_prefix = _tar_location(parsed)
    full = index_members(parsed.text, _read_tar(path), member_prefix)
  else:
    raise ValueError(f"Only folder and tar specs can be indexed, not '{spec}'.")
  keep = _kept(parsed, len(full.files), None)
  return Index([full.files[i] for i in keep], full.labels[keep],
               full.class_names)


# --- Decoding. ---


def is_image_name(name: str) -> bool:
  """Whether a file name has one of IMAGE_EXTENSIONS (any case)."""
  return name.lower().endswith(IMAGE_EXTENSIONS)


def resize_and_crop(image: Image.Image, image_size: int,
                    resize_size: int) -> np.ndarray:
  """uint8 [S, S, 3]: RGB; unless already S x S, shorter side R, centre crop S.

  Args:
    image: any PIL image (converted to RGB).
    image_size: output side S.
    resize_size: shorter side R after the bicubic resize, >= S.

  Returns:
    The image.
  """
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
  return np.asarray(image, np.uint8)


def resize_array(array: np.ndarray, image_size: int,
                 resize_size: int) -> np.ndarray:
  """`resize_and_crop` of a uint8 [H, W, C] array; S x S x 3 passes as is."""
  if array.shape == (image_size, image_size, 3):
    return array
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  return resize_and_crop(Image.fromarray(array), image_size, resize_size)


def decode_image(data: bytes | str, name: str, image_size: int,
                 resize_size: int) -> np.ndarray:
  """uint8 [S, S, 3] from encoded bytes or a file path (see resize_and_crop).

  Args:
    data: the encoded image, or a file path.
    name: what to call it in errors.
    image_size: output side S.
    resize_size: shorter side R.

  Returns:
    The image.

  Raises:
    ValueError: `data` is not a decodable image.
  """
  source = io.BytesIO(data) if isinstance(data, bytes) else data
  try:
    with Image.open(source) as image:
      return resize_and_crop(image, image_size, resize_size)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"Cannot decode image {name}: {e}") from e


def _decode_many(items: Sequence[tuple[bytes | str, str]],
                 options: _Options) -> np.ndarray:
  """uint8 [n, S, S, 3] from (data, name) pairs; PIL releases the GIL."""
  size = options.image_size
  images = np.empty((len(items), size, size, 3), np.uint8)
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    decoded = pool.map(
        lambda item: decode_image(*item, size, options.resize_size), items)
    for i, image in enumerate(decoded):
      images[i] = image
  return images


def _chunks_of(num: int, read_range: Callable[[int, int], tuple[np.ndarray,
                                                                np.ndarray]]
               ) -> ChunkReader:
  def read_chunks(chunk_size):
    if chunk_size <= 0:
      raise ValueError(f"chunk size must be positive, got {chunk_size}.")
    for start in range(0, num, chunk_size):
      yield read_range(start, min(start + chunk_size, num))
  return read_chunks


def _kept(spec: Spec, num: int, max_examples: int | None) -> np.ndarray:
  """Positions kept by the spec's subset, then the first max_examples."""
  keep = spec.subset.indices(num) if spec.subset else np.arange(num)
  if not len(keep):
    raise ValueError(f"Data spec '{spec.text}': the subset {spec.subset} "
                     f"keeps none of its {num} examples.")
  return keep[:max_examples]


def _in_memory(spec: Spec, images: np.ndarray, labels: np.ndarray,
               class_names: tuple[str, ...] | None,
               options: _Options) -> Source:
  """A Source over decoded-or-raw uint8 images (resized chunk by chunk)."""
  keep = _kept(spec, len(labels), options.max_examples)
  labels = np.asarray(labels, np.int32)
  # Slicing (not indexing) when every example is kept: no copy of the set.
  whole = np.array_equal(keep, np.arange(len(labels)))

  def read_range(start, stop):
    rows = slice(start, stop) if whole else keep[start:stop]
    chunk = images[rows]
    if chunk.shape[1:] != (options.image_size, options.image_size, 3):
      chunk = np.stack([resize_array(image, options.image_size,
                                     options.resize_size) for image in chunk])
    return chunk, labels[rows]
  return Source(spec.text, len(keep), class_names,
                _chunks_of(len(keep), read_range))


def _from_files(spec: Spec, items: list[tuple[bytes | str, str]],
                labels: np.ndarray, class_names: tuple[str, ...] | None,
                options: _Options) -> Source:
  """A Source decoding (data, name) items chunk by chunk."""
  keep = _kept(spec, len(items), options.max_examples)
  labels = np.asarray(labels, np.int32)

  def read_range(start, stop):
    rows = keep[start:stop]
    return _decode_many([items[i] for i in rows], options), labels[rows]
  return Source(spec.text, len(keep), class_names,
                _chunks_of(len(keep), read_range))


# --- Indexing. ---


def _existing(spec: Spec, path: str) -> pathlib.Path:
  if not os.path.exists(path):
    raise FileNotFoundError(f"Data spec '{spec.text}': {path} does not exist.")
  return pathlib.Path(path)


def _labelled(spec: str, class_files: dict[str, list[str]],
              where: str) -> Index:
  """Orders examples by (class, file name); labels are sorted class indices."""
  class_names = tuple(sorted(n for n, files in class_files.items() if files))
  if not class_names:
    raise FileNotFoundError(
        f"Data spec '{spec}': no {'/'.join(IMAGE_EXTENSIONS)} images in "
        f"class folders of {where} (expected <root>/<class_name>/<image>).")
  empty = sorted(set(class_files) - set(class_names))
  if empty:
    logging.warning("%s: class folders without images are not classes: %s",
                    spec, ", ".join(empty))
  files, labels = [], []
  for label, class_name in enumerate(class_names):
    names = sorted(class_files[class_name])
    files += names
    labels += [label] * len(names)
  return Index(files, np.asarray(labels, np.int32), class_names)


def index_folder(spec: str, root: str) -> Index:
  """Indexes ROOT/<class>/<image>; `spec` names the dataset in errors."""
  root_path = pathlib.Path(root)
  if not root_path.is_dir():
    raise FileNotFoundError(f"Data spec '{spec}': {root} is not a folder.")
  class_files = {
      d.name: [str(f) for f in d.iterdir() if is_image_name(f.name)]
      for d in root_path.iterdir() if d.is_dir()}
  return _labelled(spec, class_files, root)


def index_members(spec: str, names: Sequence[str], prefix: str) -> Index:
  """Indexes `<root>/<class>/<image>` tar members; root = PREFIX or inferred.

  Args:
    spec: names the dataset in errors.
    names: the archive's image member names.
    prefix: the member folder holding the class folders, or '' to infer it.

  Returns:
    The Index.

  Raises:
    FileNotFoundError: no images in class folders (under PREFIX).
    ValueError: no PREFIX and class folders under several roots.
  """
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
        f"Data spec '{spec}' holds class folders under several roots "
        f"{sorted(roots)}; pick one with tar:PATH:<root>.")
  where = f"member folder '{prefix}'" if prefix else "the archive"
  return _labelled(spec, class_files, where)


def _read_tar(path: str, with_data: bool = False) -> dict[str, bytes | None]:
  """Image member name -> bytes (None unless with_data), in one pass."""
  members = {}
  try:
    # Streaming mode reads a .tar.gz once, front to back.
    with tarfile.open(path, "r|*") as archive:
      for member in archive:
        if member.isfile() and is_image_name(member.name):
          data = archive.extractfile(member).read() if with_data else None
          members[member.name] = data
  except (tarfile.TarError, OSError, EOFError) as e:
    raise ValueError(f"Cannot read tar archive {path}: {e}") from e
  return members


def _tar_location(spec: Spec) -> tuple[str, str]:
  """(expanded archive path, member PREFIX) of a tar spec."""
  path, _, member_prefix = spec.argument.partition(":")
  path = paths.expand(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Data spec '{spec.text}': {path} does not exist.")
  return path, member_prefix.strip("/")


# --- Schemes. ---


@_scheme("npz", "npz:PATH")
def _open_npz(spec: Spec, options: _Options) -> Source:
  path = _existing(spec, paths.expand(spec.argument))
  with np.load(path, allow_pickle=False) as data:
    missing = {"image", "label"} - set(data.files)
    if missing:
      raise KeyError(f"{path} lacks key(s) {sorted(missing)}; it has "
                     f"{sorted(data.files)}.")
    images, labels = data["image"], data["label"]
    class_names = (tuple(str(n) for n in data["class_names"])
                   if "class_names" in data.files else None)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"{path}: 'image' must be uint8 [N,H,W,3], got "
                     f"{images.dtype} {images.shape}.")
  if labels.shape != images.shape[:1]:
    raise ValueError(f"{path}: 'label' shape {labels.shape} does not match "
                     f"{images.shape[0]} images.")
  return _in_memory(spec, images, labels, class_names, options)


@_scheme("folder", "folder:ROOT")
def _open_folder(spec: Spec, options: _Options) -> Source:
  root = _existing(spec, paths.expand(spec.argument))
  full = index_folder(spec.text, str(root))
  return _from_files(spec, [(f, f) for f in full.files], full.labels,
                     full.class_names, options)


@_scheme("imagenet_folder", "imagenet_folder:ROOT")
def _open_imagenet_folder(spec: Spec, options: _Options) -> Source:
  root = _existing(spec, paths.expand(spec.argument))
  labels_csv = root / "labels.csv"
  if not labels_csv.exists():
    raise FileNotFoundError(
        f"Data spec '{spec.text}': {labels_csv} is missing (expected columns "
        "filename,synset,class_index,class_name).")
  with open(labels_csv, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows or not {"filename", "class_index"} <= set(rows[0]):
    raise ValueError(f"{labels_csv} needs a header with 'filename' and "
                     "'class_index' and at least one row.")
  rows = [rows[i] for i in _kept(spec, len(rows), options.max_examples)]
  files = [str(root / "images" / row["filename"]) for row in rows]
  missing = [f for f in files if not os.path.exists(f)]
  if missing:
    raise FileNotFoundError(
        f"Data spec '{spec.text}': {len(missing)} image(s) listed in "
        f"{labels_csv} are missing, e.g. {missing[0]}.")
  labels = np.asarray([int(row["class_index"]) for row in rows], np.int32)
  class_names = None
  class_index_json = root / "imagenet_class_index.json"
  if class_index_json.exists():
    class_index = json.loads(class_index_json.read_text())
    class_names = tuple(class_index[str(i)][1]
                        for i in range(len(class_index)))
  # The rows are already the subset: select nothing more.
  whole = dataclasses.replace(spec, subset=None)
  return _from_files(whole, [(f, f) for f in files], labels, class_names,
                     dataclasses.replace(options, max_examples=None))


@_scheme("tar", "tar:PATH[:PREFIX]")
def _open_tar(spec: Spec, options: _Options) -> Source:
  path, member_prefix = _tar_location(spec)
  cache_path = _tar_cache_path(spec, path, member_prefix, options)
  if os.path.exists(cache_path):
    images, labels, class_names = _read_tar_cache(cache_path, options)
  else:
    logging.info("Decoding %s once; caching it in %s.", path, cache_path)
    images, labels, class_names = _decode_tar(spec, path, member_prefix,
                                              options)
    try:
      workdir.atomic_write(cache_path, lambda f: np.savez(
          f, image=images, label=labels, class_names=np.asarray(class_names)))
    except OSError as e:  # A read-only home must not stop training.
      logging.warning("Could not cache %s in %s: %s", path, cache_path, e)
  # The cache holds the subset already.
  whole = dataclasses.replace(spec, subset=None)
  return _in_memory(whole, images, labels, class_names,
                    dataclasses.replace(options, max_examples=None))


def _decode_tar(spec: Spec, path: str, member_prefix: str, options: _Options
                ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  members = _read_tar(path, with_data=True)
  full = index_members(spec.text, list(members), member_prefix)
  keep = _kept(spec, len(full.files), options.max_examples)
  images = _decode_many([(members[full.files[i]], f"{path}:{full.files[i]}")
                         for i in keep], options)
  return images, full.labels[keep], full.class_names


def _tar_cache_path(spec: Spec, path: str, member_prefix: str,
                    options: _Options) -> str:
  key = workdir.cache_key({
      "format": _CACHE_FORMAT, "archive": workdir.file_identity(path),
      "prefix": member_prefix, "subset": str(spec.subset or ""),
      "max_examples": options.max_examples,
      "image_size": options.image_size, "resize_size": options.resize_size,
  })
  stem = os.path.basename(path).split(".")[0] or "archive"
  return os.path.join(options.cache_dir, f"dataset_{stem}_{key}.npz")


def _read_tar_cache(cache_path: str, options: _Options
                    ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  with np.load(cache_path, allow_pickle=False) as data:
    images, labels = data["image"], data["label"]
    class_names = tuple(str(n) for n in data["class_names"])
  size = options.image_size
  if (images.dtype != np.uint8 or images.shape[1:] != (size, size, 3) or
      labels.shape != images.shape[:1]):
    raise ValueError(
        f"Dataset cache {cache_path} holds {images.dtype}{images.shape} images"
        f" and {labels.shape} labels, expected uint8[N,{size},{size},3] and "
        "[N]; delete it to rebuild.")
  return images, labels, class_names


@_scheme("tfds", "tfds:NAME:SPLIT")
def _open_tfds(spec: Spec, options: _Options) -> Source:
  # The split may itself contain ':' (e.g. 'test[:100]').
  name, _, split = spec.argument.partition(":")
  if not name or not split:
    raise ValueError(
        f"Data spec '{spec.text}' must be '{spec.prefix}tfds:NAME:SPLIT', "
        f"e.g. '{spec.prefix}tfds:cifar10:test'.")
  input_pipeline.import_tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = prepared_tfds_builder(name)
  num_examples = builder.info.splits[split].num_examples
  if options.max_examples is not None:
    num_examples = min(num_examples, options.max_examples)
  names = getattr(builder.info.features["label"], "names", None)
  class_names = tuple(names) if names else None

  def read_chunks(chunk_size):
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    images, labels = [], []
    for example in tfds.as_numpy(dataset.take(num_examples)):
      images.append(resize_array(example["image"], options.image_size,
                                 options.resize_size))
      labels.append(example["label"])
      if len(labels) == chunk_size:
        yield np.stack(images), np.asarray(labels, np.int32)
        images, labels = [], []
    if labels:
      yield np.stack(images), np.asarray(labels, np.int32)
  return Source(spec.text, num_examples, class_names, read_chunks)


def prepared_tfds_builder(name: str):
  """The TFDS builder of `name`, prepared (downloaded) on first use.

  The one TFDS policy of the project: prepare the dataset when it is not
  (downloads where the network allows it); if that fails, one line saying how
  to get it.

  Args:
    name: a TFDS dataset name, e.g. 'cifar10'.

  Returns:
    The prepared `tfds.core.DatasetBuilder`, in TFDS_DATA_DIR if set.

  Raises:
    ValueError: TFDS has no dataset of that name.
    FileNotFoundError: the dataset is not prepared and preparing it failed.
  """
  input_pipeline.import_tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    # TFDS reads TFDS_DATA_DIR once at import; read it per call instead.
    builder = tfds.builder(name, data_dir=os.environ.get("TFDS_DATA_DIR"))
  except tfds.core.DatasetNotFoundError as e:
    raise ValueError(f"TFDS has no dataset '{name}' (see "
                     "https://www.tensorflow.org/datasets/catalog).") from e
  if builder.is_prepared():
    return builder
  logging.info("Preparing TFDS dataset %s in %s (downloads it once).", name,
               builder.data_dir)
  try:  # Datasets like cifar10 download themselves; imagenet2012 cannot.
    check_download_hosts(builder)
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
    raise FileNotFoundError(
        f"TFDS dataset '{name}' is not prepared in {builder.data_dir} and "
        f"preparing it failed ({reason}). On a machine with internet run "
        f"`tfds build {name}` (imagenet2012 first needs ILSVRC2012_img_train"
        ".tar and ILSVRC2012_img_val.tar in <data_dir>/downloads/manual/), or "
        "set TFDS_DATA_DIR to a prepared copy; offline, read files instead, "
        "e.g. npz:$SID_SHARED_DIR/data/cifar10/test_exact.npz (eval) or "
        "dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz "
        "(training).") from e
  return builder


def check_download_hosts(builder) -> None:
  """Raises unless every host `builder` downloads from answers, within seconds.

  One HEAD request per host with `requests`, the library (and so the proxy
  settings) of TFDS's own downloads but without its minutes of retries; any
  HTTP status counts as an answer. Datasets with manual downloads are not
  probed: nothing is fetched for them.

  Args:
    builder: a `tfds.core.DatasetBuilder`.

  Raises:
    requests.exceptions.RequestException: a host did not answer (its message
      names the host).
  """
  import requests  # pylint: disable=g-import-not-at-top
  if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    return
  roots = sorted({f"{u.scheme}://{u.netloc}/"
                  for u in map(urllib.parse.urlsplit, builder.url_infos or {})
                  if u.scheme in ("http", "https")})
  for root in roots:
    requests.head(root, timeout=_PROBE_TIMEOUT_S).close()
