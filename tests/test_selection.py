"""Teacher-guided patch selection: weights, sampling, k-means."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from big_vision_sid import features
from big_vision_sid import models
from input_pipeline import selection


def _cfg(**overrides):
  cfg = ml_collections.ConfigDict(dict(
      selection="class_balanced", num_patches=0, selection_pool=100,
      selection_clusters=3, selection_temperature=1.0))
  cfg.update(overrides)
  return cfg


def _one_hot_scores(labels, num_classes=4):
  logits = 10.0 * np.eye(num_classes)[labels]
  return selection.PoolScores(logits.astype(np.float32),
                              np.zeros((len(labels), 2), np.float32))


def test_class_balanced_sampler_draws_each_predicted_class_equally():
  # Pool with known teacher top-1: class 0 x 700, 1 x 200, 2 x 90, 3 x 10.
  labels = np.repeat([0, 1, 2, 3], [700, 200, 90, 10])
  weights = selection.pool_weights(_cfg(), _one_hot_scores(labels), seed=0)
  np.testing.assert_allclose(
      [weights[labels == c].sum() for c in range(4)], [0.25] * 4)
  drawn = selection.sample_pool_indices(weights, seed=1,
                                        positions=np.arange(40_000))
  frequencies = np.bincount(labels[drawn], minlength=4) / len(drawn)
  np.testing.assert_allclose(frequencies, [0.25] * 4, atol=0.01)
  # Without selection the same pool shows class 3 at 1%.
  assert np.mean(labels == 3) == 0.01


def test_sampling_is_a_pure_function_of_seed_and_position():
  weights = np.random.default_rng(0).random(50)
  weights /= weights.sum()
  positions = np.arange(1000, 1500)
  a = selection.sample_pool_indices(weights, 7, positions)
  # Resuming at any position, or another host's slice, sees the same draws.
  b = np.concatenate([selection.sample_pool_indices(weights, 7, positions[:123]),
                      selection.sample_pool_indices(weights, 7, positions[123:])])
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, selection.sample_pool_indices(weights, 8, positions))
  assert a.min() >= 0 and a.max() < 50


def test_weighted_sampling_matches_the_weights():
  weights = np.array([0.5, 0.0, 0.3, 0.2])
  drawn = selection.sample_pool_indices(weights, 0, np.arange(50_000))
  np.testing.assert_allclose(np.bincount(drawn, minlength=4) / len(drawn),
                             weights, atol=0.01)


def test_entropy_favours_uncertain_patches():
  logits = np.array([[10.0, 0, 0, 0], [1.0, 0.9, 0, 0], [0.0, 0, 0, 0]],
                    np.float32)
  scores = selection.PoolScores(logits, np.zeros((3, 1), np.float32))
  weights = selection.pool_weights(_cfg(selection="entropy"), scores, 0)
  assert weights[0] < weights[1] < weights[2]
  # The uniform row has entropy log 4 (+ the floor); a near one-hot ~0.
  p = np.exp(logits[1]) / np.exp(logits[1]).sum()
  expected = np.array([0.0, -np.sum(p * np.log(p + 1e-30)), np.log(4)])
  expected = expected + 1e-3 * np.log(4)
  np.testing.assert_allclose(weights, expected / expected.sum(), atol=1e-3)
  with pytest.raises(ValueError, match="selection_temperature must be > 0"):
    selection.pool_weights(_cfg(selection="entropy", selection_temperature=0.0),
                           scores, 0)


def test_kmeans_finds_separated_clusters_and_evens_them():
  rng = np.random.default_rng(0)
  centres = np.array([[0.0, 0], [10, 0], [0, 10]])
  sizes = [300, 60, 15]
  points = np.concatenate([c + rng.normal(0, 0.3, (n, 2))
                           for c, n in zip(centres, sizes)])
  truth = np.repeat([0, 1, 2], sizes)
  ids = selection.kmeans(points, 3, seed=0)
  # Same partition as the truth, whatever the cluster numbering.
  for k in range(3):
    assert len(set(ids[truth == k])) == 1
  assert len(set(ids)) == 3
  np.testing.assert_array_equal(ids, selection.kmeans(points, 3, seed=0))
  scores = selection.PoolScores(np.zeros((len(points), 2), np.float32),
                                points.astype(np.float32))
  weights = selection.pool_weights(_cfg(selection="kmeans"), scores, 0)
  np.testing.assert_allclose([weights[truth == k].sum() for k in range(3)],
                             [1 / 3] * 3)
  with pytest.raises(ValueError, match="clusters"):
    selection.kmeans(points[:2], 3, seed=0)


def test_unknown_selector_and_pool_size():
  with pytest.raises(KeyError, match="Unknown patch selection 'uncertain'.*entropy"):
    selection.is_enabled(_cfg(selection="uncertain"))
  assert not selection.is_enabled(_cfg(selection="none"))
  assert selection.pool_size(_cfg(num_patches=0, selection_pool=77)) == 77
  assert selection.pool_size(_cfg(num_patches=500, selection_pool=77)) == 500
  with pytest.raises(ValueError, match="selection_pool must be > 0"):
    selection.pool_size(_cfg(num_patches=0, selection_pool=0))


def test_score_pool_renders_and_scores_every_patch_once_in_order():
  seen = []

  def render(indices):
    seen.extend(indices.tolist())
    return np.repeat(indices[:, None], 3, axis=1).astype(np.uint8)

  def score(images):
    return images[:, :2].astype(np.float32), images[:, :1].astype(np.float32)

  scores = selection.score_pool(render, score, size=10, chunk=4)
  assert seen == list(range(10))
  np.testing.assert_array_equal(scores.logits[:, 0], np.arange(10))
  assert scores.features.shape == (10, 1)


def test_penultimate_features_are_the_input_of_the_classifier():
  model = models.build_model("cifar_resnet8", 10)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init(jax.random.key(1), x)
  logits, feats = features.logits_and_features(model, variables, x)
  assert feats.shape == (2, 64)
  np.testing.assert_allclose(logits, model.apply(variables, x), rtol=1e-6)
  dense = variables["params"]["linear"]
  np.testing.assert_allclose(feats @ dense["kernel"] + dense["bias"], logits,
                             rtol=1e-5, atol=1e-5)

  class NoDense(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return jnp.mean(x, axis=(1, 2))

  with pytest.raises(ValueError, match="no nn.Dense"):
    features.logits_and_features(NoDense(), {}, x)


# --- In the training stream and the trainer. ---


def _stream_cfg(**overrides):
  from configs import cifar10_r56_r20  # pylint: disable=g-import-not-at-top
  cfg = cifar10_r56_r20.get_config("cpu_demo").input
  cfg.update(dict(source="skimage:astronaut", batch_size=8, num_patches=0,
                  selection_pool=40))
  cfg.update(overrides)
  return cfg


def test_selected_stream_is_deterministic_resumable_and_host_sharded():
  from input_pipeline import train_data  # pylint: disable=g-import-not-at-top
  cfg = _stream_cfg()
  weights = np.zeros(40)
  weights[[3, 17, 29]] = [0.5, 0.3, 0.2]
  # Only pool patches 3, 17 and 29 ever appear, at their weights' rates.
  shown = train_data.patch_indices(cfg, 0, np.arange(3000), weights)
  assert set(shown) == {3, 17, 29}
  np.testing.assert_allclose(np.bincount(shown, minlength=40)[[3, 17, 29]] / 3000,
                             [0.5, 0.3, 0.2], atol=0.03)

  def batches(start_step, count, **kwargs):
    iterator = train_data.make_train_iterator(cfg, seed=0, start_step=start_step,
                                              pool_weights=weights, **kwargs)
    return [np.asarray(next(iterator)["image"]) for _ in range(count)]

  full = batches(0, 4)
  np.testing.assert_array_equal(np.stack(full[2:]), np.stack(batches(2, 2)))
  hosts = [batches(0, 2, process_index=h, process_count=2) for h in (0, 1)]
  for step in range(2):
    np.testing.assert_array_equal(
        full[step], np.concatenate([hosts[0][step], hosts[1][step]]))
  # The selected patches are the chain's own pool patches (then augmented).
  plain = train_data.make_train_iterator(cfg, seed=0)
  assert not np.array_equal(full[0], np.asarray(next(plain)["image"]))


def test_scores_cache_key_changes_with_every_field_that_changes_the_pool():
  from big_vision_sid import pool_scoring  # pylint: disable=g-import-not-at-top
  from configs import cifar10_r56_r20  # pylint: disable=g-import-not-at-top

  def key(**changes):
    config = cifar10_r56_r20.get_config("cpu_demo")
    config.input.selection = "class_balanced"
    for path, value in changes.items():
      node = config
      *parents, leaf = path.split("__")
      for parent in parents:
        node = node[parent]
      node[leaf] = value
    return pool_scoring.scores_key(config)

  base = key()
  assert key() == base
  changed = {
      "seed": 1, "input__source": "skimage:astronaut", "input__patch_size": 24,
      "input__initcrop": 0.6, "input__degrees": 10.0, "input__shear": 5.0,
      "input__rrc_scale": (0.01, 1.0), "input__rrc_ratio": (0.5, 2.0),
      "input__vflip": True, "input__backend": "jax",
      "input__selection_pool": 1000, "input__num_patches": 5000,
      "teacher__name": "cifar_resnet32",
      "teacher__checkpoint": "$SID_SHARED_DIR/teachers/other.th",
      "teacher__mean": (0.5, 0.5, 0.5), "compute_dtype": "bfloat16",
  }
  keys = {name: key(**{name: value}) for name, value in changed.items()}
  assert all(k != base for k in keys.values()), keys
  assert len(set(keys.values())) == len(keys)
  # Selector settings only re-weight cached scores: same key.
  assert key(input__selection="entropy", input__selection_clusters=7) == base
  config = cifar10_r56_r20.get_config("cpu_demo")
  config.input.jitter.hue = 0.2
  assert pool_scoring.scores_key(config) != base


@pytest.mark.slow
def test_trainer_scores_the_pool_once_and_resumes_from_the_cache(tmp_path):
  from big_vision_sid import train  # pylint: disable=g-import-not-at-top
  from configs import cifar10_r56_r20  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  eval_npz = tmp_path / "eval.npz"
  np.savez(eval_npz, image=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
           label=rng.integers(0, 10, 8))
  config = cifar10_r56_r20.get_config("cpu_demo")
  config.teacher.update(name="cifar_resnet8", format="random", checkpoint="")
  config.student.name = "cifar_resnet8"
  config.input.update(dict(source="skimage:astronaut", batch_size=8,
                           selection="class_balanced", selection_pool=64))
  config.update(dict(total_steps=4, log_every_steps=2))
  config.checkpoint.update(dict(every_steps=2, every_seconds=0.0))
  config.eval.update(dict(dataset=f"npz:{eval_npz}", batch_size=8))
  workdir = tmp_path / "run"
  config.total_steps = 2
  first = train.train_and_evaluate(config, str(workdir))
  cached = list((workdir / "selection").glob("scores_*.npz"))
  assert len(cached) == 1 and first["selection_seconds"] > 0
  with np.load(cached[0]) as scores:
    assert scores["logits"].shape == (64, 10) and scores["features"].shape == (64, 64)
  config.total_steps = 4
  resumed = train.train_and_evaluate(config, str(workdir))
  assert resumed["steps_this_run"] == 2 and resumed["selection_seconds"] == 0.0
