"""Tests of input_pipeline.train_data: determinism, resume, sharding, cache."""

import itertools

import jax
import numpy as np
from PIL import Image
import pytest

from input_pipeline import config
from input_pipeline import dataset_source
from input_pipeline import train_data


def _cfg(**overrides):
  cfg = config.default_input_config()
  cfg.source = "skimage:astronaut"
  cfg.num_patches = 40
  cfg.batch_size = 16
  cfg.update(overrides)
  return cfg


def _batches(cfg, num, **kwargs):
  """The images of `num` batches (which must have no labels)."""
  iterator = train_data.make_train_iterator(cfg, seed=kwargs.pop("seed", 0),
                                            **kwargs)
  batches = list(itertools.islice(iterator, num))
  assert all(sorted(b) == ["image"] for b in batches)
  return [np.asarray(b["image"]) for b in batches]


def test_patches_per_epoch():
  assert train_data.patches_per_epoch(_cfg()) == 40
  assert train_data.patches_per_epoch(_cfg(num_patches=0)) is None
  with pytest.raises(ValueError, match="num_patches"):
    train_data.patches_per_epoch(_cfg(num_patches=-1))


def test_epochs_are_permutations():
  cfg = _cfg()
  positions = np.arange(120)
  indices = train_data.patch_indices(cfg, 0, positions)
  for epoch in range(3):
    assert sorted(indices[epoch * 40:(epoch + 1) * 40]) == list(range(40))
  assert not np.array_equal(indices[:40], indices[40:80])  # Reshuffled.
  assert not np.array_equal(indices[:40],
                            train_data.patch_indices(cfg, 1, positions)[:40])
  np.testing.assert_array_equal(
      train_data.patch_indices(_cfg(num_patches=0), 0, positions), positions)


def test_load_patches_batching_invariant():
  cfg = _cfg()
  whole = train_data.load_patches(cfg, 0, np.arange(64))
  halves = np.concatenate([train_data.load_patches(cfg, 0, np.arange(32)),
                           train_data.load_patches(cfg, 0, np.arange(32, 64))])
  np.testing.assert_array_equal(whole, halves)
  np.testing.assert_array_equal(whole, train_data.load_patches(cfg, 0,
                                                               np.arange(64)))
  assert not np.array_equal(whole[:8], train_data.load_patches(cfg, 1,
                                                               np.arange(8)))


def test_batches_shape_and_content():
  cfg = _cfg(train_augment="none")
  (batch,) = _batches(cfg, 1)
  assert batch.shape == (16, 32, 32, 3) and batch.dtype == np.uint8
  indices = train_data.patch_indices(cfg, 0, np.arange(16))
  np.testing.assert_array_equal(batch, train_data.load_patches(cfg, 0,
                                                               indices))


def test_deterministic_across_runs_and_parallelism():
  cfg = _cfg()
  first = _batches(cfg, 4)
  np.testing.assert_array_equal(np.stack(first), np.stack(_batches(cfg, 4)))
  cfg.num_parallel_calls = 1
  np.testing.assert_array_equal(np.stack(first), np.stack(_batches(cfg, 4)))
  assert not np.array_equal(first[0], _batches(cfg, 1, seed=1)[0])


def test_resume_reproduces_batches():
  cfg = _cfg()
  uninterrupted = _batches(cfg, 4)
  resumed = _batches(cfg, 1, start_step=3)
  np.testing.assert_array_equal(resumed[0], uninterrupted[3])


@pytest.mark.parametrize("num_patches", [40, 0])
def test_host_shards_concatenate_to_global_batch(num_patches):
  cfg = _cfg(num_patches=num_patches)
  (global_batch,) = _batches(cfg, 1, start_step=2)
  shards = [_batches(cfg, 1, start_step=2, process_index=h, process_count=2)[0]
            for h in range(2)]
  assert shards[0].shape == (8, 32, 32, 3)
  np.testing.assert_array_equal(np.concatenate(shards), global_batch)


def test_jax_backend_matches_tf_backend():
  cfg = _cfg()
  via_tf = _batches(cfg, 2)
  assert isinstance(next(train_data.make_train_iterator(cfg, seed=0))["image"],
                    np.ndarray)
  cfg.backend = "jax"
  via_jax = _batches(cfg, 2)
  for a, b in zip(via_tf, via_jax):
    assert np.abs(a.astype(float) - b).mean() < 1.0
  # Rendered on the device and left there.
  assert isinstance(next(train_data.make_train_iterator(cfg, seed=0))["image"],
                    jax.Array)


def test_noise_input_stream():
  cfg = _cfg(source="noise:normal", train_augment="none")
  (batch,) = _batches(cfg, 1)
  assert batch.shape == (16, 32, 32, 3)
  assert abs(batch.mean() / 255.0 - 0.5) < 0.02


def test_cache_is_reused(tmp_path):
  cfg = _cfg(cache_dir=str(tmp_path), train_augment="none")
  first = _batches(cfg, 3)
  files = list(tmp_path.glob("patches_*.npy"))
  assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
  cached = np.load(files[0])
  np.testing.assert_array_equal(cached, train_data.load_patches(
      _cfg(), 0, np.arange(40)))
  mtime = files[0].stat().st_mtime_ns
  np.testing.assert_array_equal(np.stack(first), np.stack(_batches(cfg, 3)))
  assert files[0].stat().st_mtime_ns == mtime
  # A different seed is a different dataset, hence a different file.
  _batches(cfg, 1, seed=5)
  assert len(list(tmp_path.glob("patches_*.npy"))) == 2
  # So is the other backend's render (equal only to float rounding).
  cfg.backend = "jax"
  _batches(cfg, 1)
  assert len(list(tmp_path.glob("patches_*.npy"))) == 3


def test_bad_configs_raise():
  with pytest.raises(ValueError, match="process_count 3"):
    _batches(_cfg(), 1, process_count=3)
  with pytest.raises(ValueError, match="train_augment 'mixup'"):
    _batches(_cfg(train_augment="mixup"), 1)
  with pytest.raises(ValueError, match="backend 'torch'"):
    _batches(_cfg(backend="torch"), 1)
  with pytest.raises(FileNotFoundError, match="missing.png"):
    _batches(_cfg(source="/nonexistent/missing.png"), 1)


@pytest.mark.parametrize("backend", ["tf", "jax"])
def test_labelled_source_batches_carry_the_permuted_labels(tmp_path, backend):
  rng = np.random.default_rng(0)
  for class_name in ("ant", "bee", "cat"):
    (tmp_path / class_name).mkdir()
    for i in range(4):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
          tmp_path / class_name / f"{i}.png")
  cfg = _cfg(source=f"dataset:folder:{tmp_path}", batch_size=8,
             backend=backend, train_augment="none")
  assert train_data.has_labels(cfg) and not train_data.has_labels(_cfg())
  dataset = dataset_source.load_dataset(cfg.source, 32)
  batches = list(itertools.islice(
      train_data.make_train_iterator(cfg, seed=0, start_step=1), 2))
  indices = train_data.patch_indices(cfg, 0, np.arange(8, 24))
  assert not np.array_equal(indices, np.arange(8, 24) % 12)  # Permuted.
  for batch, rows in zip(batches, (indices[:8], indices[8:])):
    assert sorted(batch) == ["image", "label"]
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (8,)
    np.testing.assert_array_equal(batch["label"], dataset.labels[rows])
    np.testing.assert_array_equal(np.asarray(batch["image"]),
                                  dataset.images[rows])
