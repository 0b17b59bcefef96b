"""Tests for the source-image scorer: each signal against a direct reference."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from big_vision_sid import score_image

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_mean_cosine_distance_equals_the_pairwise_mean():
  features = np.random.default_rng(0).normal(size=(7, 5))
  unit = features / np.linalg.norm(features, axis=1, keepdims=True)
  pairwise = [1.0 - unit[i] @ unit[j] for i in range(7) for j in range(7)
              if i != j]
  assert score_image.mean_cosine_distance(features) == pytest.approx(
      np.mean(pairwise), abs=1e-12)
  # Identical directions: no diversity, whatever the norms.
  assert score_image.mean_cosine_distance(
      np.outer([1.0, 2.0, 3.0], [0.6, 0.8])) == pytest.approx(0.0, abs=1e-12)


def test_entropy_and_effective_classes_by_hand():
  assert score_image.mean_entropy(np.zeros((3, 10))) == pytest.approx(math.log(10))
  confident = np.full((2, 4), -100.0)
  confident[:, 1] = 100.0
  assert score_image.mean_entropy(confident) == pytest.approx(0.0, abs=1e-9)
  # p = (0.5, 0.5): entropy log 2.
  assert score_image.mean_entropy(np.array([[3.0, 3.0]])) == pytest.approx(math.log(2))
  # Top-1 classes 0,0,1,1,2,2: three equally used classes.
  logits = np.eye(4)[[0, 0, 1, 1, 2, 2]]
  assert score_image.effective_classes(logits) == pytest.approx(3.0)
  assert score_image.effective_classes(np.eye(4)[[2, 2, 2]]) == pytest.approx(1.0)


def test_compressed_size_grows_with_detail():
  # 256 x 256, so that the fixed header bytes hardly count.
  flat = np.full((256, 256, 3), 128, np.uint8)
  noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
  for fmt in ("PNG", "JPEG"):
    assert (score_image.compressed_bytes_per_pixel(flat, fmt)
            < 0.2 * score_image.compressed_bytes_per_pixel(noise, fmt))
  # Uncompressible RGB noise needs about 3 bytes per pixel as PNG.
  assert score_image.compressed_bytes_per_pixel(noise, "PNG") == pytest.approx(3.0, rel=0.05)


def test_spearman_matches_scipy_with_ties():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 4, 9).astype(float)  # Many ties.
  y = rng.normal(size=9)
  assert score_image.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
  assert score_image.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
  assert math.isnan(score_image.spearman([1, 1, 1], [1, 2, 3]))


def test_permutation_p_value_by_hand():
  # n = 5, perfectly monotone: only the identity and the reversal of 120
  # pairings reach |rho| = 1.
  assert score_image.permutation_p_value(range(5), range(5)) == pytest.approx(2 / 120)
  # Monte Carlo path agrees with the exact one.
  x, y = [1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]
  exact = score_image.permutation_p_value(x, y)
  sampled = score_image.permutation_p_value(x, y, max_exact=0, draws=20_000)
  assert sampled == pytest.approx(exact, abs=0.01)


def test_bootstrap_interval_brackets_rho():
  rng = np.random.default_rng(2)
  x = rng.normal(size=8)
  y = x + rng.normal(scale=0.5, size=8)
  low, high = score_image.bootstrap_interval(x, y)
  assert low <= score_image.spearman(x, y) <= high
  assert score_image.bootstrap_interval(range(8), range(8)) == (1.0, 1.0)


def _config():
  from configs import cifar10_r56_r20  # pylint: disable=g-import-not-at-top
  config = cifar10_r56_r20.get_config("cpu_demo")
  config.teacher.update(name="cifar_resnet8", format="random", checkpoint="")
  return config


def test_score_sources_on_an_image_and_per_patch_noise():
  scores = score_image.score_sources(["skimage:astronaut", "noise:uniform"],
                                     _config(), num_patches=64)
  astronaut, noise = scores
  assert astronaut.source_png_bpp is not None and noise.source_png_bpp is None
  # Per-patch uniform noise is incompressible: ~3 bytes per pixel.
  assert noise.patch_png_bpp > 2.5 > astronaut.patch_png_bpp
  for score in scores:
    assert 1.0 <= score.class_coverage <= 10.0
    assert 0.0 <= score.teacher_entropy <= math.log(10) + 1e-6
  # Deterministic: the same patches and teacher give the same signals.
  again = score_image.score_sources(["skimage:astronaut"], _config(), 64)[0]
  assert again.feature_diversity == astronaut.feature_diversity
  with pytest.raises(ValueError, match="not one source image"):
    score_image.score_sources(["dataset:tar:/x.tar.gz"], _config(), 64)
  with pytest.raises(ValueError, match="--patches must be >= 2"):
    score_image.score_sources(["skimage:astronaut"], _config(), 1)


def test_correlation_table_skips_missing_signals():
  base = dict(patch_png_bpp=1.0, feature_diversity=0.1, teacher_entropy=0.5,
              class_coverage=2.0, seconds=1.0)
  scores = [score_image.ImageScore(source=str(i), source_png_bpp=None,
                                   source_jpeg_bpp=None,
                                   **{**base, "feature_diversity": 0.1 * i})
            for i in range(4)]
  rows = score_image.correlation_table(scores, [10.0, 20.0, 30.0, 40.0])
  by_signal = {row["signal"]: row for row in rows}
  assert "source_png_bpp" not in by_signal
  assert by_signal["feature_diversity"]["spearman"] == pytest.approx(1.0)
  assert by_signal["feature_diversity"]["p_value"] == pytest.approx(2 / 24)


def test_command_line_errors_are_one_line(tmp_path):
  completed = subprocess.run(
      [sys.executable, "-m", "big_vision_sid.score_image",
       str(tmp_path / "missing.jpg"), "--config.teacher.format=random",
       "--config.teacher.name=cifar_resnet8", "--config.teacher.checkpoint="],
      cwd=_REPO_ROOT, capture_output=True, text=True)
  assert completed.returncode == 1
  assert completed.stderr.strip().splitlines()[-1].startswith(
      "error: FileNotFoundError:")
  out = tmp_path / "scores.json"
  completed = subprocess.run(
      [sys.executable, "-m", "big_vision_sid.score_image", "skimage:coffee",
       "--patches=16", "--config.teacher.format=random",
       "--config.teacher.name=cifar_resnet8", "--config.teacher.checkpoint=",
       f"--out={out}"],
      cwd=_REPO_ROOT, capture_output=True, text=True, check=True)
  assert "| skimage:coffee |" in completed.stdout
  assert json.loads(out.read_text())["scores"][0]["source"] == "skimage:coffee"
