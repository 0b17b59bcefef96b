"""Tests of input_pipeline.labeled_data: the one reader of labelled images."""

import csv
import re
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image
import pytest

from big_vision_sid import paths
from input_pipeline import dataset_source
from input_pipeline import eval_data
from input_pipeline import labeled_data

# Created in this (non-alphabetical) order; labels follow sorted names.
CLASSES = ("zebra", "ant", "mole")
PER_CLASS = 10


def _write_tree(root, per_class=PER_CLASS):
  """root/<class>/<NNNN>.png of random 8x8 images; {(class, i): pixels}."""
  rng = np.random.default_rng(0)
  written = {}
  for class_name in CLASSES:
    (root / class_name).mkdir(parents=True)
    for i in reversed(range(per_class)):
      pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(root / class_name / f"{i:04d}.png")
      written[(class_name, i)] = pixels
  return written


@pytest.fixture(name="tree")
def _tree(tmp_path):
  root = tmp_path / "tree"
  return root, _write_tree(root)


def _images(spec, **kwargs):
  source = labeled_data.open_source(spec, image_size=8, resize_size=8,
                                    **kwargs)
  return source, *source.read_all()


@pytest.mark.parametrize("text, expected", [
    ("::3", [0, 3, 6, 9]),
    ("~::3", [1, 2, 4, 5, 7, 8]),
    ("1:8:2", [1, 3, 5, 7]),
    ("-3:", [7, 8, 9]),
    ("~:2", list(range(2, 10))),
    (":", list(range(10))),
])
def test_subset_is_python_slicing_or_its_complement(text, expected):
  subset = labeled_data.Subset.parse(text, "spec")
  np.testing.assert_array_equal(subset.indices(10), expected)
  assert str(subset) == f"[{text}]"


@pytest.mark.parametrize("text", ["val", "5", "::0", "1:2:3:4", "~~::2"])
def test_malformed_subsets_are_rejected(text):
  with pytest.raises(ValueError, match=re.escape(
      f"Subset '[{text}]' of 'folder:/x[{text}]'")):
    labeled_data.parse(f"folder:/x[{text}]")


def test_parse_keeps_tfds_slicing_and_rejects_steps():
  spec = labeled_data.parse("tfds:imagenet2012:validation[:1000]")
  assert spec.argument == "imagenet2012:validation[:1000]"
  assert spec.subset is None
  with pytest.raises(ValueError, match="TFDS slicing"):
    labeled_data.parse("tfds:cifar10:train[::10]")
  with pytest.raises(ValueError, match="TFDS slicing"):
    labeled_data.parse("dataset:tfds:cifar10:train[~:100]", "dataset:")
  spec = labeled_data.parse("dataset:tar:/a.tgz:root/train[~::10]", "dataset:")
  assert (spec.scheme, spec.argument) == ("tar", "/a.tgz:root/train")
  assert spec.subset == labeled_data.Subset(None, None, 10, complement=True)


def test_validation_split_of_a_folder(tree):
  root, written = tree
  _, all_images, all_labels = _images(f"folder:{root}")
  val, val_images, val_labels = _images(f"folder:{root}[::10]")
  rest, rest_images, rest_labels = _images(f"folder:{root}[~::10]")
  assert (val.num_examples, rest.num_examples) == (3, 27)
  assert val.class_names == rest.class_names == ("ant", "mole", "zebra")
  np.testing.assert_array_equal(np.bincount(val_labels), [1, 1, 1])
  np.testing.assert_array_equal(np.bincount(rest_labels), [9, 9, 9])
  # Every 10th of the (class, file name) order: file 0000 of each class.
  for image, class_name in zip(val_images, ("ant", "mole", "zebra")):
    np.testing.assert_array_equal(image, written[(class_name, 0)])
  # Disjoint, and together every example exactly once, in order.
  val_keys = {image.tobytes() for image in val_images}
  rest_keys = {image.tobytes() for image in rest_images}
  assert not val_keys & rest_keys
  assert val_keys | rest_keys == {image.tobytes() for image in all_images}
  np.testing.assert_array_equal(rest_images, np.delete(all_images,
                                                       [0, 10, 20], axis=0))
  np.testing.assert_array_equal(rest_labels, np.delete(all_labels, [0, 10, 20]))
  # Deterministic: the same spec reads the same examples.
  np.testing.assert_array_equal(_images(f"folder:{root}[::10]")[1], val_images)


def test_tar_subsets_are_cached_separately_and_correctly(tree, tmp_path,
                                                         monkeypatch):
  root, _ = tree
  archive = tmp_path / "tree.tar.gz"
  with tarfile.open(archive, "w:gz") as f:
    f.add(root, arcname="data/train")
  cache = str(tmp_path / "cache")
  _, folder_images, folder_labels = _images(f"folder:{root}")
  for text, rows in [("", np.arange(30)), ("[::10]", [0, 10, 20]),
                     ("[~::10]", np.delete(np.arange(30), [0, 10, 20]))]:
    _, images, labels = _images(f"tar:{archive}{text}", cache_dir=cache)
    np.testing.assert_array_equal(images, folder_images[rows])
    np.testing.assert_array_equal(labels, folder_labels[rows])
  assert len(list((tmp_path / "cache").glob("dataset_tree_*.npz"))) == 3

  def not_again(*args, **kwargs):
    raise AssertionError(f"read the archive instead of the cache: {args}")
  monkeypatch.setattr(labeled_data, "_read_tar", not_again)
  _, images, labels = _images(f"tar:{archive}[::10]", cache_dir=cache)
  np.testing.assert_array_equal(images, folder_images[[0, 10, 20]])
  np.testing.assert_array_equal(labels, [0, 1, 2])


def test_eval_and_training_read_the_same_examples(tree, tmp_path):
  root, _ = tree
  dataset = dataset_source.load_dataset(f"dataset:folder:{root}[~::10]", 8)
  eval_set = eval_data.load_eval_set(f"folder:{root}[~::10]", image_size=8)
  (batch,) = eval_set.batches(32)
  np.testing.assert_array_equal(batch["label"][batch["mask"]], dataset.labels)
  np.testing.assert_array_equal(batch["image"][batch["mask"]],
                                dataset.images / np.float32(255))
  index = dataset_source.index_dataset(f"dataset:folder:{root}[::10]")
  assert [f.split("/")[-2:] for f in index.files] == [
      ["ant", "0000.png"], ["mole", "0000.png"], ["zebra", "0000.png"]]


def test_subsets_of_npz_and_imagenet_folder_keep_file_order(tmp_path):
  images = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones(
      (1, 8, 8, 3), np.uint8)
  np.savez(tmp_path / "set.npz", image=images, label=np.arange(6) % 2)
  _, chosen, labels = _images(f"npz:{tmp_path}/set.npz[1::2]", max_examples=2)
  np.testing.assert_array_equal(chosen[:, 0, 0, 0], [1, 3])
  np.testing.assert_array_equal(labels, [1, 1])
  (tmp_path / "images").mkdir()
  with open(tmp_path / "labels.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["filename", "synset", "class_index", "class_name"])
    for i in range(4):
      Image.fromarray(images[i]).save(tmp_path / "images" / f"{i}.png")
      writer.writerow([f"{i}.png", "n0", str(10 + i), "thing"])
  source, chosen, labels = _images(f"imagenet_folder:{tmp_path}[~::2]")
  assert source.num_examples == 2 and source.class_names is None
  np.testing.assert_array_equal(chosen[:, 0, 0, 0], [1, 3])
  np.testing.assert_array_equal(labels, [11, 13])


def test_empty_subset_and_class_folders_without_images(tree):
  root, _ = tree
  with pytest.raises(ValueError, match=r"subset \[5:2\] keeps none of its 30"):
    _images(f"folder:{root}[5:2]")
  (root / "aardvark").mkdir()  # Sorted first, but holds no image.
  source, _, labels = _images(f"folder:{root}")
  assert source.class_names == ("ant", "mole", "zebra")
  np.testing.assert_array_equal(np.bincount(labels), [10, 10, 10])


def test_resize_is_in_uint8_and_matches_the_eval_floats():
  rng = np.random.default_rng(3)
  pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
  resized = labeled_data.resize_array(pixels, 32, 32)
  assert resized.dtype == np.uint8 and resized.shape == (32, 32, 3)
  # Independent reference: shorter side 40 -> 32 gives 38x32, crop x 3..35.
  expected = np.asarray(Image.fromarray(pixels).resize((38, 32),
                                                       Image.BICUBIC))[:, 3:35]
  np.testing.assert_array_equal(resized, expected)
  # Eval images are exactly these uint8 values over 255.
  np.testing.assert_array_equal(
      eval_data.preprocess_image(pixels, 32, 37),
      labeled_data.resize_array(pixels, 32, 37) / np.float32(255))
  # S x S x 3 passes untouched; one channel becomes RGB.
  same = pixels[:32, :32]
  assert labeled_data.resize_array(same, 32, 37) is same
  gray = labeled_data.resize_array(pixels[:32, :32, :1], 32, 37)
  np.testing.assert_array_equal(gray, np.repeat(pixels[:32, :32, :1], 3, -1))


def test_registry_and_option_errors(tmp_path):
  with pytest.raises(KeyError, match="Unknown labelled data scheme 'hdf5'. "
                     "Known: folder, imagenet_folder, npz, tar, tfds."):
    labeled_data.open_source("hdf5:/x", image_size=8, resize_size=8)
  assert labeled_data.usage("dataset:") == (
      "dataset:folder:ROOT, dataset:imagenet_folder:ROOT, dataset:npz:PATH, "
      "dataset:tar:PATH[:PREFIX], dataset:tfds:NAME:SPLIT")
  with pytest.raises(ValueError, match="does not start with 'dataset:'"):
    labeled_data.parse("folder:/x", "dataset:")
  with pytest.raises(ValueError, match="image_size must be positive"):
    labeled_data.open_source(f"folder:{tmp_path}", image_size=0, resize_size=8)
  with pytest.raises(ValueError, match="Only folder and tar"):
    labeled_data.index(f"npz:{tmp_path}/x.npz")
  (tmp_path / "cls").mkdir()
  (tmp_path / "cls" / "broken.jpg").write_bytes(b"not a jpeg")
  source = labeled_data.open_source(f"folder:{tmp_path}", image_size=8,
                                    resize_size=8)
  with pytest.raises(ValueError, match="Cannot decode image .*broken.jpg"):
    source.read_all()


def test_offline_tfds_fails_at_the_download_with_one_line(tmp_path,
                                                          monkeypatch):
  pytest.importorskip("tensorflow_datasets")
  requests = pytest.importorskip("requests")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))

  def unreachable(*args, **kwargs):
    raise requests.exceptions.ConnectionError("Network is unreachable")

  # TFDS downloads through requests; the rest of its preparation runs for
  # real, so a missing dependency (importlib_resources) would show up here.
  monkeypatch.setattr(requests.Session, "request", unreachable)
  loaders = [
      lambda: eval_data.load_eval_set("tfds:cifar10:test", image_size=32),
      lambda: dataset_source.load_dataset("dataset:tfds:cifar10:train", 32),
  ]
  for load in loaders:
    with pytest.raises(FileNotFoundError) as error:
      load()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"TFDS dataset 'cifar10' is not prepared in "
                              f"{tmp_path}")
    assert "ConnectionError: Network is unreachable" in message
    assert "tfds build cifar10" in message
    assert "npz:$SID_SHARED_DIR/data/cifar10/test_exact.npz" in message
    assert ("dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz"
            in message)


def test_unknown_tfds_name_is_one_line():
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(ValueError, match=r"^TFDS has no dataset 'sid_nonesuch' "
                     r"\(see https://www.tensorflow.org/datasets/catalog\).$"):
    eval_data.load_eval_set("tfds:sid_nonesuch:test", image_size=32)


def test_training_and_eval_readers_do_not_import_each_other():
  code = ("import sys, input_pipeline.dataset_source; "
          "assert 'input_pipeline.eval_data' not in sys.modules; "
          "import input_pipeline.eval_data; "
          "assert 'tensorflow' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True,
                 cwd=paths._PROJECT_ROOT)  # pylint: disable=protected-access
  code = ("import sys, input_pipeline.eval_data; "
          "assert 'input_pipeline.dataset_source' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True,
                 cwd=paths._PROJECT_ROOT)  # pylint: disable=protected-access


def test_shared_cifar10_validation_split():
  path = paths.shared_dir() / "data/cifar10/train_jpeg.tar.gz"
  if not path.exists():
    pytest.skip(f"{path} is not available.")
  spec = "dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz"
  val = dataset_source.index_dataset(spec + "[::10]")
  rest = dataset_source.index_dataset(spec + "[~::10]")
  assert (len(val.files), len(rest.files)) == (5_000, 45_000)
  np.testing.assert_array_equal(np.bincount(val.labels), [500] * 10)
  np.testing.assert_array_equal(np.bincount(rest.labels), [4_500] * 10)
  assert not set(val.files) & set(rest.files)
  assert len(set(val.files) | set(rest.files)) == 50_000
  assert val.files[:2] == ["CIFAR-10-images/train/airplane/0000.jpg",
                           "CIFAR-10-images/train/airplane/0010.jpg"]
