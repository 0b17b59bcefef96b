"""Tests of dataset: sources (folder, tar, tfds) and the labelled iterator."""

import itertools
import os
import tarfile

import numpy as np
from PIL import Image
import pytest

from big_vision_sid import paths
from input_pipeline import config
from input_pipeline import dataset_source
from input_pipeline import labeled_data
from input_pipeline import train_data

# Created in this (non-alphabetical) order; labels must follow sorted names.
CLASSES = ("zebra", "ant", "mole")
PER_CLASS = 4
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                 "frog", "horse", "ship", "truck")


def _write_tree(root, ext=".png", size=(32, 32)):
  """root/<class>/<NNNN><ext> of random images; returns {class: [arrays]}."""
  rng = np.random.default_rng(0)
  written = {}
  for class_name in CLASSES:
    (root / class_name).mkdir(parents=True)
    written[class_name] = []
    # Written in reverse so that directory order is not name order.
    for i in reversed(range(PER_CLASS)):
      image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
      Image.fromarray(image).save(root / class_name / f"{i:04d}{ext}")
      written[class_name].insert(0, image)
  (root / "ant" / "notes.txt").write_text("not an image")
  return written


def _write_tar(tmp_path, roots=("CIFAR-10-images/train",), ext=".jpg"):
  """A .tar.gz with <root>/<class>/<NNNN>.jpg members, plus a text file."""
  tree = tmp_path / "tree"
  _write_tree(tree, ext=ext)
  path = tmp_path / "images.tar.gz"
  with tarfile.open(path, "w:gz") as archive:
    archive.add(tree / "ant" / "notes.txt", arcname="README.txt")
    for root in roots:
      archive.add(tree, arcname=root)
  return path, tree


def _pil_rgb(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def test_folder_labels_are_alphabetical_and_pixels_exact(tmp_path):
  written = _write_tree(tmp_path)
  dataset = dataset_source.load_dataset(f"dataset:folder:{tmp_path}", 32)
  assert dataset.class_names == ("ant", "mole", "zebra")
  assert len(dataset) == 12 and dataset.images.shape == (12, 32, 32, 3)
  assert dataset.images.dtype == np.uint8 and dataset.labels.dtype == np.int32
  np.testing.assert_array_equal(dataset.labels, np.repeat([0, 1, 2], 4))
  expected = np.stack([img for name in ("ant", "mole", "zebra")
                       for img in written[name]])
  np.testing.assert_array_equal(dataset.images, expected)
  assert not dataset.images.flags.writeable


def test_other_sizes_are_resized_bicubic_and_centre_cropped(tmp_path):
  written = _write_tree(tmp_path, size=(48, 40))
  dataset = dataset_source.load_dataset(f"dataset:folder:{tmp_path}", 32)
  # Independent reference: shorter side 40 -> 32 gives 38x32, crop x 3..35.
  expected = np.asarray(Image.fromarray(written["ant"][0]).resize(
      (38, 32), Image.BICUBIC))[:, 3:35]
  np.testing.assert_array_equal(dataset.images[0], expected)


def test_tar_matches_folder_and_ignores_non_images(tmp_path):
  path, tree = _write_tar(tmp_path)
  from_tar = dataset_source.load_dataset(f"dataset:tar:{path}", 32,
                                         cache_dir=str(tmp_path / "cache"))
  from_folder = dataset_source.load_dataset(f"dataset:folder:{tree}", 32)
  assert from_tar.class_names == ("ant", "mole", "zebra")
  np.testing.assert_array_equal(from_tar.labels, from_folder.labels)
  np.testing.assert_array_equal(from_tar.images, from_folder.images)
  np.testing.assert_array_equal(from_tar.images[4],
                                _pil_rgb(tree / "mole" / "0000.jpg"))
  index = dataset_source.index_dataset(f"dataset:tar:{path}")
  assert index.files[0] == "CIFAR-10-images/train/ant/0000.jpg"
  assert len(index.files) == 12


def test_tar_cache_is_written_once_and_reused(tmp_path, monkeypatch):
  path, _ = _write_tar(tmp_path)
  cache = tmp_path / "cache"
  spec = f"dataset:tar:{path}"
  first = dataset_source.load_dataset(spec, 32, cache_dir=str(cache))
  files = list(cache.iterdir())
  assert len(files) == 1 and files[0].name.startswith("dataset_images_")
  assert files[0].suffix == ".npz"

  def no_decoding(*args, **kwargs):
    raise AssertionError(f"decoded again instead of reading the cache: {args}")
  # The archive is not even opened on a cache hit.
  monkeypatch.setattr(labeled_data, "_read_tar", no_decoding)
  second = dataset_source.load_dataset(spec, 32, cache_dir=str(cache))
  np.testing.assert_array_equal(second.images, first.images)
  np.testing.assert_array_equal(second.labels, first.labels)
  assert second.class_names == first.class_names
  monkeypatch.undo()

  # Another size, or a rewritten archive, is another cache entry.
  assert dataset_source.load_dataset(spec, 16, cache_dir=str(cache)
                                     ).images.shape == (12, 16, 16, 3)
  stat = os.stat(path)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  dataset_source.load_dataset(spec, 32, cache_dir=str(cache))
  assert len(list(cache.glob("*.npz"))) == 3
  assert not list(cache.glob("*.tmp"))


def test_tar_with_several_roots_needs_a_prefix(tmp_path):
  path, _ = _write_tar(tmp_path, roots=("data/train", "data/test"))
  with pytest.raises(ValueError, match="several roots.*data/test"):
    dataset_source.index_dataset(f"dataset:tar:{path}")
  dataset = dataset_source.load_dataset(f"dataset:tar:{path}:data/test/", 32,
                                        cache_dir=str(tmp_path / "cache"))
  assert len(dataset) == 12
  with pytest.raises(FileNotFoundError, match="member folder 'data/val'"):
    dataset_source.index_dataset(f"dataset:tar:{path}:data/val")


def test_bad_sources_raise(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.tar.gz"):
    dataset_source.load_dataset(f"dataset:tar:{tmp_path}/missing.tar.gz", 32)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    dataset_source.load_dataset(f"dataset:folder:{tmp_path}/nowhere", 32)
  with pytest.raises(FileNotFoundError, match="no .jpg/.jpeg/.png images"):
    dataset_source.load_dataset(f"dataset:folder:{tmp_path}", 32)
  with pytest.raises(ValueError, match="dataset:tfds:NAME:SPLIT"):
    dataset_source.load_dataset("dataset:tfds:cifar10", 32)
  with pytest.raises(ValueError, match="must be dataset:folder:ROOT"):
    dataset_source.load_dataset("dataset:zip:/x.zip", 32)
  (tmp_path / "cls").mkdir()
  (tmp_path / "cls" / "broken.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="broken.png"):
    dataset_source.load_dataset(f"dataset:folder:{tmp_path}", 32)
  not_a_tar = tmp_path / "plain.tar.gz"
  not_a_tar.write_bytes(b"\x1f\x8b garbage")
  with pytest.raises(ValueError, match="Cannot read tar archive"):
    dataset_source.index_dataset(f"dataset:tar:{not_a_tar}")


def test_unprepared_tfds_dataset_says_how_to_get_it(tmp_path, monkeypatch):
  pytest.importorskip("tensorflow_datasets")
  requests = pytest.importorskip("requests")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))

  def unreachable(*args, **kwargs):
    raise requests.exceptions.ConnectionError("Network is unreachable")

  # Training prepares (downloads) like eval; offline it says how to get it.
  monkeypatch.setattr(requests.Session, "request", unreachable)
  with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
    dataset_source.load_dataset("dataset:tfds:cifar10:train", 32)


def test_shared_cifar10_tar_holds_50000_labelled_images():
  path = paths.shared_dir() / "data/cifar10/train_jpeg.tar.gz"
  if not path.exists():
    pytest.skip(f"{path} is not available.")
  # Indexing reads the member list only (about 2 s); decoding all 50,000
  # JPEGs is what the cache is for.
  index = dataset_source.index_dataset(
      "dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz")
  assert index.class_names == CIFAR_CLASSES
  assert len(index.files) == 50_000
  np.testing.assert_array_equal(np.bincount(index.labels), [5000] * 10)
  assert index.files[5000] == "CIFAR-10-images/train/automobile/0000.jpg"


# --- The training iterators over a dataset source. ---


def _cfg(root, **overrides):
  cfg = config.default_input_config()
  cfg.source = f"dataset:folder:{root}"
  cfg.batch_size = 4
  cfg.update(overrides)
  return cfg


def _labeled(cfg, num, **kwargs):
  iterator = train_data.make_train_iterator(
      cfg, seed=kwargs.pop("seed", 0), **kwargs)
  return [(np.asarray(batch["image"]), np.asarray(batch["label"]))
          for batch in itertools.islice(iterator, num)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("tree")
  _write_tree(root)
  return root


def test_epoch_shows_every_example_once_with_its_label(tree):
  cfg = _cfg(tree, train_augment="none")
  assert train_data.patches_per_epoch(cfg) == 12
  dataset = dataset_source.load_dataset(cfg.source, 32)
  batches = _labeled(cfg, 3)
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int32
  indices = train_data.patch_indices(cfg, 0, np.arange(12))
  assert sorted(indices) == list(range(12))
  np.testing.assert_array_equal(images, dataset.images[indices])
  np.testing.assert_array_equal(labels, dataset.labels[indices])
  # The unlabelled iterator shows the same images.
  unlabeled = train_data.make_train_iterator(cfg, seed=0)
  np.testing.assert_array_equal(next(unlabeled)["image"], batches[0][0])


def test_flip_crop_is_a_flipped_shifted_copy(tree):
  cfg = _cfg(tree, train_augment="flip_crop")
  dataset = dataset_source.load_dataset(cfg.source, 32)
  ((images, labels),) = _labeled(cfg, 1)
  indices = train_data.patch_indices(cfg, 0, np.arange(4))
  np.testing.assert_array_equal(labels, dataset.labels[indices])
  for image, index in zip(images, indices):
    # Numpy reference: every flip and pad-4 crop of the original.
    padded = np.pad(dataset.images[index], [(4, 4), (4, 4), (0, 0)])
    candidates = [
        crop[:, ::-1] if flip else crop
        for dy in range(9) for dx in range(9) for flip in (False, True)
        for crop in [padded[dy:dy + 32, dx:dx + 32]]]
    assert any(np.array_equal(image, c) for c in candidates)


def test_labeled_iterator_is_deterministic_resumable_and_sharded(tree):
  cfg = _cfg(tree)
  run = _labeled(cfg, 5)
  again = _labeled(cfg, 5)
  for (a_images, a_labels), (b_images, b_labels) in zip(run, again):
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
  (resumed,) = _labeled(cfg, 1, start_step=4)  # Step 4 is in epoch 1.
  np.testing.assert_array_equal(resumed[0], run[4][0])
  np.testing.assert_array_equal(resumed[1], run[4][1])
  shards = [_labeled(cfg, 1, start_step=4, process_index=h,
                     process_count=2)[0] for h in range(2)]
  assert shards[0][0].shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(
      np.concatenate([s[0] for s in shards]), run[4][0])
  np.testing.assert_array_equal(
      np.concatenate([s[1] for s in shards]), run[4][1])
  assert not np.array_equal(_labeled(cfg, 1, seed=1)[0][1], run[0][1])


def test_tar_source_iterates_via_the_cache(tmp_path):
  path, _ = _write_tar(tmp_path)
  cfg = _cfg(tmp_path, source=f"dataset:tar:{path}",
             cache_dir=str(tmp_path / "cache"), train_augment="none")
  ((images, labels),) = _labeled(cfg, 1)
  assert images.shape == (4, 32, 32, 3) and labels.shape == (4,)
  assert len(list((tmp_path / "cache").glob("dataset_*.npz"))) == 1


def test_single_image_sources_have_no_labels(tree):
  cfg = config.default_input_config()
  cfg.source = "skimage:astronaut"
  # The trainer refuses a target that needs labels up front on this.
  assert not train_data.has_labels(cfg)
  assert train_data.has_labels(_cfg(tree))
