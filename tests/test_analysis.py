"""`python -m big_vision_sid.analyze` and its parts (big_vision_sid/analysis/)."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import threadpoolctl
from PIL import Image
import pytest
from scipy import special
from sklearn import metrics

from big_vision_sid import analyze
from big_vision_sid import train
from big_vision_sid import workdir as workdir_lib
from big_vision_sid.analysis import common
from big_vision_sid.analysis import confidence
from big_vision_sid.analysis import per_class
from big_vision_sid.analysis import tsne
from input_pipeline import train_data
from test_train import tiny_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
_PARTS = ("confidence", "tsne", "cka", "neurons", "per_class", "gallery")
# Counts small enough for a 64-patch, 16-image tiny run.
_SMALL = dict(num_patches=64, max_test_images=16, tsne_perplexity=5.0,
              tsne_thumbnails=3, neuron_steps=3, neuron_classes=2,
              neuron_channels=1, gallery_size=8, cka_batch_size=8, batch_size=32)


def test_tsne_is_seeded_and_separates_clusters():
  # One OpenMP thread: on a busy CPU sklearn's spinning threads make this
  # 120-point map take a minute instead of a second.
  with threadpoolctl.threadpool_limits(limits=1):
    _check_tsne()


def _check_tsne():
  rng = np.random.default_rng(0)
  centres = 6.0 * rng.normal(size=(3, 12))
  labels = np.repeat(np.arange(3), 40)
  features = centres[labels] + rng.normal(size=(120, 12))
  points, kl = tsne.embed(features, seed=1, perplexity=10)
  assert points.shape == (120, 2) and np.isfinite(kl)
  again, _ = tsne.embed(features, seed=1, perplexity=10)
  np.testing.assert_array_equal(points, again)
  # Each point's nearest neighbour on the map is of its own cluster.
  distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
  np.fill_diagonal(distances, np.inf)
  assert np.mean(labels[distances.argmin(axis=1)] == labels) > 0.95
  # Wider features go through PCA first; the map keeps its shape.
  wide, _ = tsne.embed(np.repeat(features, 6, axis=1), seed=1, perplexity=10)
  assert wide.shape == (120, 2)
  with pytest.raises(ValueError, match="perplexity 10 needs more than 30"):
    tsne.embed(features[:30], seed=0, perplexity=10)


def test_patch_neighbour_share_and_spread_points():
  # Test points far from the patches: none of their neighbours are patches.
  features = np.concatenate([np.zeros((20, 2)), 100 + np.arange(20)[:, None]
                             * np.ones((1, 2))])
  is_patch = np.arange(40) < 20
  assert tsne.patch_neighbour_share(features, is_patch, k=5) == 0.0
  # Interleaved on a line.
  line = np.arange(40, dtype=float)[:, None]
  alternating = np.arange(40) % 2 == 0
  # Both neighbours of an odd point are even (patches), but for the last
  # one's: 38 and 37.
  share = tsne.patch_neighbour_share(line, alternating, k=2)
  assert share == pytest.approx((19 + 0.5) / 20)
  chosen = tsne.spread_points(line, 3, seed=0)
  # Greedy farthest-point sampling is within a factor 2 of the best spacing
  # (19.5 for 3 of 40 points on a line).
  gaps = np.abs(chosen[:, None] - chosen[None])[np.triu_indices(3, 1)]
  assert len(set(chosen.tolist())) == 3 and gaps.min() >= 19.5 / 2
  assert len(tsne.spread_points(line, 0, seed=0)) == 0


def test_per_class_numbers_match_sklearn():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 5, 300)
  predicted = np.where(rng.uniform(size=300) < 0.6, labels,
                       rng.integers(0, 5, 300))
  confusion = per_class.confusion_matrix(predicted, labels, 6)
  np.testing.assert_array_equal(
      confusion, metrics.confusion_matrix(labels, predicted, labels=range(6)))
  accuracy = per_class.per_class_accuracy(predicted, labels, 6)
  reference = 100 * metrics.recall_score(labels, predicted, labels=range(5),
                                         average=None)
  np.testing.assert_allclose(accuracy[:5], reference)
  assert np.isnan(accuracy[5])  # A class without test examples.


def test_confidence_is_the_tempered_max_softmax():
  logits = np.random.default_rng(2).normal(size=(50, 10)) * 5
  for temperature in (1.0, 8.0):
    expected = special.softmax(logits / temperature, axis=-1).max(axis=-1)
    np.testing.assert_allclose(confidence.max_softmax(logits, temperature),
                               expected, rtol=1e-12)


def test_options_part_names_and_workdir_are_checked(tmp_path):
  assert analyze.parse_parts("cka, tsne,cka") == ["cka", "tsne"]
  with pytest.raises(KeyError, match="Unknown analysis 'tsnee'. Known: cka"):
    analyze.parse_parts("tsnee")
  with pytest.raises(ValueError, match="names no analysis"):
    analyze.parse_parts(" , ")
  with pytest.raises(ValueError, match="--num_patches=0 must be >= 1; "
                     "--tsne_perplexity=0.0 must be > 0"):
    common.Options(num_patches=0, tsne_perplexity=0.0).check()
  with pytest.raises(ValueError, match="exclude each other"):
    common.Options(compare_workdir="a", compare_teacher="b").check()
  with pytest.raises(FileNotFoundError, match="does not exist"):
    analyze.analyze_run(str(tmp_path / "absent"), out=str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def _analyze_cli(*args: str) -> subprocess.CompletedProcess:
  # One OpenMP thread for t-SNE, as in test_tsne_is_seeded_and_separates_clusters.
  return subprocess.run(
      [sys.executable, "-m", "big_vision_sid.analyze", *args], cwd=ROOT,
      capture_output=True, text=True, timeout=600,
      env={**os.environ, "OMP_NUM_THREADS": "1"})


def _assert_one_error_line(completed: subprocess.CompletedProcess,
                           message: str) -> None:
  assert completed.returncode == 1
  assert "Traceback" not in completed.stderr
  errors = [line for line in completed.stderr.splitlines()
            if line.startswith("error: ")]
  assert len(errors) == 1 and message in errors[0], completed.stderr
  assert "RESULT" not in completed.stdout


@pytest.mark.slow
def test_cli_errors_for_a_bad_workdir_and_an_unknown_part(tmp_path):
  _assert_one_error_line(_analyze_cli(f"--workdir={tmp_path / 'absent'}"),
                         f"Workdir {tmp_path / 'absent'} does not exist.")
  _assert_one_error_line(
      _analyze_cli(f"--workdir={tmp_path}", "--what=tsne,cca"),
      "Unknown analysis 'cca'. Known: cka, confidence, gallery, neurons, "
      "per_class, tsne.")


@pytest.fixture(name="run", scope="module")
def fixture_run(tmp_path_factory):
  """A finished tiny run: cifar_resnet8 from a random cifar_resnet8, 6 steps."""
  root = tmp_path_factory.mktemp("analysis")
  rng = np.random.default_rng(0)
  npz = root / "eval.npz"
  np.savez(npz, image=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
           label=rng.integers(0, 10, 20))
  config = tiny_config()
  config.eval.dataset = f"npz:{npz}"
  workdir = root / "run"
  result = train.train_and_evaluate(config, str(workdir))
  return {"workdir": workdir, "result": result}


def _small_flags() -> list[str]:
  return [f"--{key}={value}" for key, value in _SMALL.items()]


@pytest.mark.slow
def test_cli_renders_every_part(run, tmp_path):
  out = tmp_path / "figures"
  completed = _analyze_cli(f"--workdir={run['workdir']}", f"--out={out}",
                           f"--compare_workdir={run['workdir']}",
                           *_small_flags())
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = [line for line in completed.stdout.splitlines()
             if line.startswith("RESULT ")]
  summary = json.loads(results[-1][len("RESULT "):])
  assert summary["parts"] == list(_PARTS) and summary["step"] == 6

  payload = json.loads((out / analyze.ANALYSIS_FILE).read_text())
  assert list(payload["sections"]) == sorted(_PARTS)
  index = (out / analyze.INDEX_FILE).read_text()
  files = [f["file"] for s in payload["sections"].values() for f in s["figures"]]
  assert sorted(files) == sorted(["confidence.png", "tsne.png", "cka.png",
                                  "neurons_class.png", "neurons_channel.png",
                                  "per_class.png", "confusion.png",
                                  "gallery.png"])
  for name in files:
    with Image.open(out / name) as image:
      assert image.format == "PNG" and min(image.size) > 200
    assert f"![{name}]({name})" in index

  numbers = {name: s["numbers"] for name, s in payload["sections"].items()}
  # The student against itself (another "run" on the same workdir): CKA 1.
  cka = numbers["cka"]
  assert cka["layers_student"] == ["layer1_0", "layer2_0", "layer3_0", "logits"]
  np.testing.assert_allclose(np.diag(cka["minibatch_cka"]), 1.0, atol=1e-3)
  np.testing.assert_allclose(np.diag(cka["full_batch_cka"]), 1.0, atol=1e-3)
  assert cka["mean_diagonal_cka"] == pytest.approx(1.0, abs=1e-3)
  assert cka["minibatches"] == 2 and cka["images"] == 16
  # The trainer's own evaluation of these 16 images.
  trained = run["result"]
  assert numbers["per_class"]["accuracy_student"] == pytest.approx(
      trained["student_top1"])
  assert numbers["per_class"]["accuracy_teacher"] == pytest.approx(
      trained["teacher_top1"])
  assert sum(numbers["per_class"]["test_examples_per_class"]) == 16
  for key in ("student_patches", "student_test", "teacher_patches",
              "teacher_test"):
    assert 0.1 <= numbers["confidence"][f"mean_confidence_{key}"] <= 1.0
  assert numbers["tsne"]["points"] == 64 + 16
  assert numbers["gallery"]["patches"] == 8
  objectives = numbers["neurons"]["student_objectives"]
  assert objectives[:2] == ["0", "1"] and [o.split(":")[0] for o in objectives[2:]] == [
      "layer1_0", "layer2_0", "layer3_0"]
  assert numbers["neurons"]["teacher_objectives"] == objectives
  assert summary["cka.mean_diagonal_cka"] == cka["mean_diagonal_cka"]


@pytest.mark.slow
def test_parts_run_alone_and_accumulate(run, tmp_path):
  workdir, out = str(run["workdir"]), str(tmp_path / "out")
  options = common.Options(**_SMALL)
  analyze.analyze_run(workdir, what="per_class", out=out, options=options)
  summary = analyze.analyze_run(workdir, what=["gallery"], out=out,
                                options=options)
  assert summary["parts"] == ["gallery"] and "per_class.seconds" not in summary
  payload = workdir_lib.read_json(pathlib.Path(out) / analyze.ANALYSIS_FILE)
  assert sorted(payload["sections"]) == ["gallery", "per_class"]
  index = (pathlib.Path(out) / analyze.INDEX_FILE).read_text()
  assert index.index("## Per-class view") < index.index("## Patch gallery")
  # Another checkpoint starts afresh.
  analyze.analyze_run(workdir, what="gallery", out=out, step=3, options=options)
  payload = workdir_lib.read_json(pathlib.Path(out) / analyze.ANALYSIS_FILE)
  assert payload["step"] == 3 and list(payload["sections"]) == ["gallery"]
  with pytest.raises(ValueError, match="has no checkpoint at step 4"):
    analyze.analyze_run(workdir, what="gallery", out=out, step=4,
                        options=options)


@pytest.mark.slow
def test_patches_are_the_runs_samples(run, tmp_path):
  finished = workdir_lib.load_run(str(run["workdir"]))
  config = ml_collections.ConfigDict(finished.config.to_dict())
  config.input.train_augment = "none"
  plain = dataclasses.replace(finished, config=config)
  options = common.Options(num_patches=20)
  patches = common.Context(plain, options, str(tmp_path)).patches
  # Sample q of the fixed 64-patch set is patch perm_epoch(q): the chain's.
  indices = train_data.patch_indices(config.input, config.seed, np.arange(20))
  expected = train_data.load_patches(config.input, config.seed, indices)
  np.testing.assert_array_equal(common.to_uint8(patches), expected)

  # Mixed as trained (CutMix, the batch reversed): every pixel is the patch's
  # own or its partner's, and some are the partner's.
  mixed = common.Context(plain, dataclasses.replace(options, mixed_patches=True),
                         str(tmp_path)).patches
  assert config.mixing.mode == "cutmix" and config.mixing.partner == "reverse"
  batch = config.input.batch_size
  for start in range(0, 16, batch):
    own = patches[start:start + batch]
    partner = own[::-1]
    got = mixed[start:start + batch]
    assert np.all(np.isclose(got, own) | np.isclose(got, partner))
  assert not np.allclose(mixed, patches)
