"""Tests for input_pipeline.eval_data: specs, padding, preprocessing, errors."""

import csv
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from big_vision_sid import paths
from input_pipeline import eval_data


def _write_npz(path, num, size=8, with_class_names=True):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (num, size, size, 3), dtype=np.uint8)
  labels = np.arange(num) % 3
  arrays = {"image": images, "label": labels}
  if with_class_names:
    arrays["class_names"] = np.array(["cat", "dog", "fox"])
  np.savez(path, **arrays)
  return images, labels


def _collect(eval_set, batch_size):
  return list(eval_set.batches(batch_size))


def test_npz_padding_and_mask_cover_every_example_once(tmp_path):
  images, labels = _write_npz(tmp_path / "tiny.npz", num=10)
  eval_set = eval_data.load_eval_set(f"npz:{tmp_path}/tiny.npz", image_size=8)
  assert eval_set.num_examples == 10
  assert eval_set.class_names == ["cat", "dog", "fox"]
  batches = _collect(eval_set, 4)
  assert [int(b["mask"].sum()) for b in batches] == [4, 4, 2]
  for batch in batches:
    assert batch["image"].shape == (4, 8, 8, 3)
    assert batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool
  # Real examples come back in order and unchanged (already 8x8: no resize).
  real_images = np.concatenate([b["image"][b["mask"]] for b in batches])
  real_labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(real_images, images.astype(np.float32) / 255)
  np.testing.assert_array_equal(real_labels, labels)
  # Padding is zeros and sits only at the end.
  np.testing.assert_array_equal(batches[-1]["mask"], [1, 1, 0, 0])
  assert not batches[-1]["image"][2:].any()
  # The set can be iterated again (each evaluation starts afresh).
  assert len(_collect(eval_set, 5)) == 2


def test_npz_max_examples_and_optional_class_names(tmp_path):
  _write_npz(tmp_path / "tiny.npz", num=10, with_class_names=False)
  eval_set = eval_data.load_eval_set(f"npz:{tmp_path}/tiny.npz", image_size=8,
                                     max_examples=3)
  assert eval_set.num_examples == 3 and eval_set.class_names is None
  batches = _collect(eval_set, 4)
  assert len(batches) == 1 and int(batches[0]["mask"].sum()) == 3


def test_npz_path_expands_shared_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("SID_SHARED_DIR", str(tmp_path))
  _write_npz(tmp_path / "tiny.npz", num=2)
  eval_set = eval_data.load_eval_set("npz:$SID_SHARED_DIR/tiny.npz",
                                     image_size=8)
  assert eval_set.num_examples == 2


def test_folder_labels_are_alphabetical(tmp_path):
  rng = np.random.default_rng(1)
  written = {}
  # Created out of order, with mixed extensions and a file to ignore.
  for class_name, filename in [("zebra", "a.png"), ("apple", "x.PNG"),
                               ("mango", "b.png"), ("apple", "y.png")]:
    (tmp_path / class_name).mkdir(exist_ok=True)
    pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / class_name / filename)
    written[(class_name, filename)] = pixels
  (tmp_path / "mango" / "notes.txt").write_text("not an image")
  eval_set = eval_data.load_eval_set(f"folder:{tmp_path}", image_size=6)
  assert eval_set.class_names == ["apple", "mango", "zebra"]
  assert eval_set.num_examples == 4
  (batch,) = _collect(eval_set, 4)
  np.testing.assert_array_equal(batch["label"], [0, 0, 1, 2])
  # Files are sorted within a class; PNG is lossless, so pixels round-trip.
  expected_order = [("apple", "x.PNG"), ("apple", "y.png"),
                    ("mango", "b.png"), ("zebra", "a.png")]
  for image, key in zip(batch["image"], expected_order):
    np.testing.assert_array_equal(image, written[key] / np.float32(255))


def test_folder_decodes_jpeg_and_grayscale(tmp_path):
  (tmp_path / "only").mkdir()
  Image.new("L", (10, 10), color=128).save(tmp_path / "only" / "gray.jpg")
  eval_set = eval_data.load_eval_set(f"folder:{tmp_path}", image_size=10)
  (batch,) = _collect(eval_set, 2)
  assert batch["image"].shape == (2, 10, 10, 3)
  np.testing.assert_allclose(batch["image"][0], 128 / 255, atol=2 / 255)


def test_tar_matches_folder_and_is_cached(tmp_path):
  rng = np.random.default_rng(4)
  for class_name in ("b", "a"):
    (tmp_path / "tree" / class_name).mkdir(parents=True)
    for i in range(3):
      Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
          tmp_path / "tree" / class_name / f"{i}.png")
  with tarfile.open(tmp_path / "set.tar", "w") as archive:
    archive.add(tmp_path / "tree", arcname="root")
  cache = tmp_path / "cache"
  from_folder = _collect(eval_data.load_eval_set(
      f"folder:{tmp_path}/tree", image_size=16), 4)
  for _ in range(2):  # Decoded once, then read from the cache.
    eval_set = eval_data.load_eval_set(f"tar:{tmp_path}/set.tar",
                                       image_size=16, cache_dir=str(cache))
    assert eval_set.class_names == ["a", "b"] and eval_set.num_examples == 6
    for tar_batch, folder_batch in zip(_collect(eval_set, 4), from_folder):
      for key in ("image", "label", "mask"):
        np.testing.assert_array_equal(tar_batch[key], folder_batch[key])
  assert len(list(cache.glob("dataset_set_*.npz"))) == 1


def _reference_resize_crop(pixels, image_size, resize_size):
  """Independent ImageNet-style reference: numbers worked out by hand."""
  # 300 x 400 (H x W) -> shorter side 256: 256 x round(400 * 256 / 300) = 341.
  resized = Image.fromarray(pixels).resize((341, 256), Image.BICUBIC)
  # Centre crop 224: left = (341 - 224) // 2 = 58, top = (256 - 224) // 2 = 16.
  assert (image_size, resize_size) == (224, 256)
  return np.asarray(resized)[16:240, 58:282].astype(np.float32) / 255


def test_resize_and_centre_crop_to_224(tmp_path):
  rng = np.random.default_rng(2)
  pixels = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
  (tmp_path / "cls").mkdir()
  Image.fromarray(pixels).save(tmp_path / "cls" / "big.png")
  eval_set = eval_data.load_eval_set(f"folder:{tmp_path}", image_size=224)
  (batch,) = _collect(eval_set, 1)
  assert batch["image"].shape == (1, 224, 224, 3)
  np.testing.assert_array_equal(batch["image"][0],
                                _reference_resize_crop(pixels, 224, 256))
  # An npz of non-square images takes the same path.
  np.savez(tmp_path / "big.npz", image=pixels[None], label=np.array([0]))
  (npz_batch,) = _collect(
      eval_data.load_eval_set(f"npz:{tmp_path}/big.npz", image_size=224), 1)
  np.testing.assert_array_equal(npz_batch["image"], batch["image"])


def test_preprocess_explicit_resize_size():
  pixels = np.full((50, 80, 3), 200, np.uint8)
  out = eval_data.preprocess_image(pixels, image_size=32, resize_size=40)
  assert out.shape == (32, 32, 3)
  np.testing.assert_allclose(out, 200 / 255, atol=1e-6)


def test_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
    eval_data.load_eval_set(f"npz:{tmp_path}/missing.npz", image_size=8)
  np.savez(tmp_path / "nolabel.npz", image=np.zeros((2, 8, 8, 3), np.uint8))
  with pytest.raises(KeyError, match=r"nolabel.npz lacks key\(s\) \['label'\]"):
    eval_data.load_eval_set(f"npz:{tmp_path}/nolabel.npz", image_size=8)
  np.savez(tmp_path / "gray.npz", image=np.zeros((2, 8, 8), np.uint8),
           label=np.zeros(2))
  with pytest.raises(ValueError, match=r"uint8 \[N,H,W,3\].*\(2, 8, 8\)"):
    eval_data.load_eval_set(f"npz:{tmp_path}/gray.npz", image_size=8)
  (tmp_path / "empty" / "cls").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="no .jpg/.jpeg/.png images"):
    eval_data.load_eval_set(f"folder:{tmp_path}/empty", image_size=8)
  with pytest.raises(FileNotFoundError, match="labels.csv is missing"):
    eval_data.load_eval_set(f"imagenet_folder:{tmp_path}/empty", image_size=8)
  with pytest.raises(KeyError, match="Unknown eval data scheme 'hdf5'.*npz"):
    eval_data.load_eval_set("hdf5:/x", image_size=8)
  with pytest.raises(ValueError, match="scheme:argument"):
    eval_data.load_eval_set("cifar10", image_size=8)
  with pytest.raises(ValueError, match="smaller than image_size"):
    eval_data.load_eval_set(f"npz:{tmp_path}/x.npz", image_size=224,
                            resize_size=200)
  with pytest.raises(ValueError, match="tfds:NAME:SPLIT"):
    eval_data.load_eval_set("tfds:cifar10", image_size=32)


def test_imagenet_folder_reports_missing_images(tmp_path):
  (tmp_path / "images").mkdir()
  with open(tmp_path / "labels.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["filename", "synset", "class_index", "class_name"])
    writer.writerow(["gone.JPEG", "n0", "3", "thing"])
  with pytest.raises(FileNotFoundError, match="1 image.*gone.JPEG"):
    eval_data.load_eval_set(f"imagenet_folder:{tmp_path}", image_size=8)


def test_import_does_not_load_tensorflow():
  code = ("import sys, input_pipeline.eval_data; "
          "assert 'tensorflow' not in sys.modules; "
          "assert 'tensorflow_datasets' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True,
                 cwd=paths._PROJECT_ROOT)  # pylint: disable=protected-access


def test_shared_cifar10_test_exact():
  path = paths.shared_dir() / "data/cifar10/test_exact.npz"
  if not path.exists():
    pytest.skip(f"{path} not available")
  eval_set = eval_data.load_eval_set(
      "npz:$SID_SHARED_DIR/data/cifar10/test_exact.npz", image_size=32)
  assert eval_set.num_examples == 1017
  assert len(eval_set.class_names) == 10
  batches = _collect(eval_set, 512)
  assert [int(b["mask"].sum()) for b in batches] == [512, 505]
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  assert labels.min() == 0 and labels.max() == 9


def test_shared_imagenet_sample_dev():
  root = paths.shared_dir() / "data/imagenet_sample_dev"
  if not (root / "labels.csv").exists():
    pytest.skip(f"{root} not available")
  eval_set = eval_data.load_eval_set(
      "imagenet_folder:$SID_SHARED_DIR/data/imagenet_sample_dev",
      image_size=224, max_examples=8)
  assert eval_set.num_examples == 8
  assert len(eval_set.class_names) == 1000
  assert eval_set.class_names[0] == "tench"
  with open(root / "labels.csv", newline="") as f:
    expected = [int(row["class_index"]) for row in csv.DictReader(f)][:8]
  (batch,) = _collect(eval_set, 8)
  assert batch["image"].shape == (8, 224, 224, 3)
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  np.testing.assert_array_equal(batch["label"], expected)
  assert batch["mask"].all()


def test_tfds_not_prepared_error(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))

  def offline(self, *args, **kwargs):
    raise ConnectionError("no network")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  with pytest.raises(FileNotFoundError, match="'cifar10' is not prepared.*tfds "
                     "build cifar10"):
    eval_data.load_eval_set("tfds:cifar10:test", image_size=32)


def test_tfds_prepared_dataset(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))

  class SidTinyEval(tfds.core.GeneratorBasedBuilder):
    """Five 40x60 images with labels 0, 1, 2, 0, 1."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(None, None, 3)),
              "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
          }))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"test": self._generate_examples()}

    def _generate_examples(self):
      rng = np.random.default_rng(0)
      for i in range(5):
        yield i, {"image": rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
                  "label": i % 3}

  SidTinyEval(data_dir=str(tmp_path)).download_and_prepare()
  eval_set = eval_data.load_eval_set("tfds:sid_tiny_eval:test[:4]",
                                     image_size=32)
  assert eval_set.num_examples == 4
  assert eval_set.class_names == ["a", "b", "c"]
  batches = _collect(eval_set, 3)
  assert [int(b["mask"].sum()) for b in batches] == [3, 1]
  assert batches[0]["image"].shape == (3, 32, 32, 3)
  all_labels = sorted(np.concatenate([b["label"][b["mask"]] for b in batches]))
  # Four of the labels {0, 0, 1, 1, 2} (TFDS orders examples by key hash).
  assert set(all_labels) <= {0, 1, 2} and len(all_labels) == 4
