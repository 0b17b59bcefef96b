r"""Ranks candidate source images for single-image distillation by cheap signals.

  python -m big_vision_sid.score_image $SID_SHARED_DIR/images/city.jpg \
      $SID_SHARED_DIR/images/animals.png skimage:astronaut noise:uniform_image

The paper (Fig. 2) finds that distillation quality roughly follows the density
of an image and its JPEG size. Every signal below is computed on the source
or on `--patches` patches of the config's augmentation chain (those the
student would see), labelled by the config's teacher, in seconds per image:

- `source_png_bpp`, `source_jpeg_bpp`: compressed bytes per pixel of the whole
  image (PNG; JPEG at quality 75). A noise image maximises them, so they cannot
  rank alone.
- `patch_png_bpp`: PNG bytes per pixel of the patches (density at the scale
  the student sees).
- `feature_diversity`: mean pairwise cosine distance of the teacher's
  penultimate features over the patches.
- `teacher_entropy`: mean entropy (nats, tau = 1) of the teacher's predictions.
- `class_coverage`: exp(entropy of the teacher's top-1 histogram): the
  effective number of classes the patches fall into (1 to num_classes).

`--validate='workdirs/sources/*'` scores the source of every finished run
there (which should share the recipe and step count) and prints, per signal,
Spearman's rank correlation with the runs' student top-1, a bootstrap 95%
interval and an exact permutation p-value: with ~8 runs only a strong
correlation is distinguishable from chance.
"""

import dataclasses
import io
import itertools
import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from big_vision_sid import targets
from big_vision_sid import teachers
from big_vision_sid import train_step
from input_pipeline import train_data
from input_pipeline.image import sources

SIGNALS = ("source_png_bpp", "source_jpeg_bpp", "patch_png_bpp",
           "feature_diversity", "teacher_entropy", "class_coverage")
_JPEG_QUALITY = 75
_BATCH = 256


@dataclasses.dataclass(frozen=True)
class ImageScore:
  """The signals of one source (None where a signal does not apply)."""
  source: str
  source_png_bpp: float | None
  source_jpeg_bpp: float | None
  patch_png_bpp: float
  feature_diversity: float
  teacher_entropy: float
  class_coverage: float
  seconds: float


def compressed_bytes_per_pixel(image: np.ndarray, fmt: str) -> float:
  """Bytes per pixel of uint8 [H, W, 3] `image` as PNG or JPEG (quality 75)."""
  buffer = io.BytesIO()
  options = {"quality": _JPEG_QUALITY} if fmt == "JPEG" else {}
  Image.fromarray(image).save(buffer, format=fmt, **options)
  return buffer.tell() / (image.shape[0] * image.shape[1])


def mean_cosine_distance(features: np.ndarray) -> float:
  """Mean of 1 - cos(f_i, f_j) over ordered pairs i != j of [N, D] rows."""
  norms = np.linalg.norm(features, axis=1, keepdims=True)
  unit = features / np.where(norms > 0, norms, 1.0)
  n = len(unit)
  total = np.sum(unit, axis=0)
  # sum_{i != j} u_i.u_j = |sum u|^2 - sum |u_i|^2.
  off_diagonal = float(total @ total) - float(np.sum(unit * unit))
  return 1.0 - off_diagonal / (n * (n - 1))


def mean_entropy(logits: np.ndarray) -> float:
  """Mean entropy (nats) of softmax(logits) over the rows of [N, C]."""
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_p = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
  return float(np.mean(-np.sum(np.exp(log_p) * log_p, axis=1)))


def effective_classes(logits: np.ndarray) -> float:
  """exp(entropy of the top-1 class histogram) of [N, C] logits."""
  counts = np.bincount(np.argmax(logits, axis=1), minlength=logits.shape[1])
  p = counts[counts > 0] / counts.sum()
  return float(np.exp(-np.sum(p * np.log(p))))


def _teacher_scorer(config: ml_collections.ConfigDict
                    ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """uint8 patches -> (teacher logits, penultimate features), as numpy."""
  target = targets.from_teacher(
      teachers.load_teacher(config.teacher, dtype=jnp.float32))
  variables = jax.device_put(target.variables)

  @jax.jit
  def score(images):
    x = train_step.normalize(train_step.to_unit_float(images), target.mean,
                             target.std)
    return target.features(variables, x)

  def run(patches):
    logits, features = [], []
    for start in range(0, len(patches), _BATCH):
      chunk = patches[start:start + _BATCH]
      padded = np.concatenate(
          [chunk, np.zeros((_BATCH - len(chunk),) + chunk.shape[1:], chunk.dtype)])
      out_logits, out_features = jax.device_get(score(jnp.asarray(padded)))
      logits.append(out_logits[:len(chunk)])
      features.append(out_features[:len(chunk)])
    return np.concatenate(logits), np.concatenate(features)

  return run


def _source_image(spec: str) -> np.ndarray | None:
  """The whole source image, or None for per-patch noise."""
  if sources.is_noise_input(spec):
    return None
  return sources.load_source_image(spec)


def score_sources(specs: Sequence[str], config: ml_collections.ConfigDict,
                  num_patches: int) -> list[ImageScore]:
  """Scores each source spec with `config`'s chain, seed and teacher.

  Args:
    specs: source specs as `input.source` takes them (paths, `skimage:`,
      `noise:`).
    config: an experiment config (its teacher and `input` chain are used).
    num_patches: patches rendered and labelled per source.

  Returns:
    One score per spec, in order.

  Raises:
    ValueError: num_patches < 2, or a `dataset:` source (not one image).
    FileNotFoundError: a missing image file.
  """
  if num_patches < 2:
    raise ValueError(f"--patches must be >= 2, got {num_patches}.")
  teacher = _teacher_scorer(config)
  scores = []
  for spec in specs:
    if spec.startswith("dataset:"):
      raise ValueError(f"'{spec}' is a labelled dataset, not one source image.")
    start = time.time()
    input_cfg = ml_collections.ConfigDict(config.input.to_dict())
    input_cfg.source = spec
    image = _source_image(spec)
    patches = train_data.load_patches(input_cfg, config.seed,
                                      np.arange(num_patches))
    logits, features = teacher(patches)
    patch_bpp = float(np.mean([compressed_bytes_per_pixel(p, "PNG")
                               for p in patches]))
    scores.append(ImageScore(
        source=spec,
        source_png_bpp=(None if image is None
                        else compressed_bytes_per_pixel(image, "PNG")),
        source_jpeg_bpp=(None if image is None
                         else compressed_bytes_per_pixel(image, "JPEG")),
        patch_png_bpp=patch_bpp,
        feature_diversity=mean_cosine_distance(features),
        teacher_entropy=mean_entropy(logits),
        class_coverage=effective_classes(logits),
        seconds=time.time() - start))
  return scores


def _ranks(values: np.ndarray) -> np.ndarray:
  """Ranks 1..n, ties sharing their average rank."""
  order = np.argsort(values, kind="stable")
  ranks = np.empty(len(values))
  ranks[order] = np.arange(1, len(values) + 1)
  for value in np.unique(values):
    tied = values == value
    ranks[tied] = ranks[tied].mean()
  return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rank correlation (Pearson's r of the tie-averaged ranks)."""
  rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
  rx, ry = rx - rx.mean(), ry - ry.mean()
  denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
  return float(rx @ ry) / denominator if denominator > 0 else float("nan")


def permutation_p_value(x: Sequence[float], y: Sequence[float],
                        max_exact: int = 9, draws: int = 20_000,
                        seed: int = 0) -> float:
  """Two-sided p-value of Spearman's rho under random pairing.

  Exact over all n! pairings for n <= `max_exact`, else Monte Carlo.
  """
  observed = abs(spearman(x, y))
  y = np.asarray(y, float)
  if len(y) <= max_exact:
    pairings = (y[list(p)] for p in itertools.permutations(range(len(y))))
  else:
    rng = np.random.default_rng(seed)
    pairings = (rng.permutation(y) for _ in range(draws))
  values = np.array([abs(spearman(x, p)) for p in pairings])
  return float(np.mean(values >= observed - 1e-12))


def bootstrap_interval(x: Sequence[float], y: Sequence[float],
                       draws: int = 2_000, seed: int = 0
                       ) -> tuple[float, float]:
  """95% percentile bootstrap interval of Spearman's rho over (x, y) pairs."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  rng = np.random.default_rng(seed)
  rhos = []
  for _ in range(draws):
    pick = rng.integers(0, len(x), len(x))
    rho = spearman(x[pick], y[pick])
    if not math.isnan(rho):
      rhos.append(rho)
  if not rhos:  # A constant signal has no rank correlation.
    return float("nan"), float("nan")
  low, high = np.percentile(rhos, [2.5, 97.5])
  return float(low), float(high)


def correlation_table(scores: Sequence[ImageScore],
                      accuracies: Sequence[float]) -> list[dict[str, Any]]:
  """Per signal: Spearman's rho with `accuracies`, its interval, p-value, n."""
  rows = []
  for signal in SIGNALS:
    pairs = [(getattr(s, signal), a) for s, a in zip(scores, accuracies)
             if getattr(s, signal) is not None]
    if len(pairs) < 3:
      continue
    x, y = zip(*pairs)
    low, high = bootstrap_interval(x, y)
    rows.append({"signal": signal, "n": len(pairs), "spearman": spearman(x, y),
                 "ci95": [low, high], "p_value": permutation_p_value(x, y)})
  return rows


def _format(value: float | None) -> str:
  return "-" if value is None else f"{value:.3f}"


def scores_markdown(scores: Sequence[ImageScore],
                    accuracies: Sequence[float] | None = None) -> str:
  """The scores as a Markdown table, best `feature_diversity` first."""
  header = ["source", *SIGNALS, "seconds"] + (
      ["student top-1"] if accuracies is not None else [])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  order = sorted(range(len(scores)),
                 key=lambda i: -scores[i].feature_diversity)
  for i in order:
    score = scores[i]
    cells = [score.source] + [_format(getattr(score, s)) for s in SIGNALS]
    cells.append(f"{score.seconds:.1f}")
    if accuracies is not None:
      cells.append(f"{accuracies[i]:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def correlation_markdown(rows: Sequence[dict[str, Any]]) -> str:
  lines = ["| signal | n | Spearman rho | bootstrap 95% | permutation p |",
           "|---|---|---|---|---|"]
  for row in rows:
    lines.append(f"| {row['signal']} | {row['n']} | {row['spearman']:+.2f} | "
                 f"[{row['ci95'][0]:+.2f}, {row['ci95'][1]:+.2f}] | "
                 f"{row['p_value']:.3f} |")
  return "\n".join(lines) + "\n"


def _define_flags() -> Callable[[Sequence[str]], None]:
  """Defines the command-line flags; returns `main`."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  from big_vision_sid import cli  # pylint: disable=g-import-not-at-top
  from big_vision_sid import report  # pylint: disable=g-import-not-at-top
  from big_vision_sid import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file(
      "config", "configs/cifar10_r56_r20.py:cpu_demo",
      "Config whose teacher, seed and patch chain score the images.",
      lock_config=True)
  flags.DEFINE_integer("patches", 2000, "Patches rendered per source.")
  flags.DEFINE_multi_string("validate", [], "Glob of finished run workdirs: "
                            "score their sources and correlate with their "
                            "student top-1.")
  flags.DEFINE_string("out", None, "Also write the scores (and correlations) "
                      "as JSON here.")
  values = flags.FLAGS

  def main(argv: Sequence[str]) -> None:
    cli.setup_logging()
    specs = list(argv[1:])
    try:
      accuracies = None
      if values.validate:
        if specs:
          raise ValueError("Give either images or --validate, not both.")
        runs = [report.load_run(w) for w in report.find_workdirs(values.validate)]
        runs = [r for r in runs if r.finished]
        if not runs:
          raise ValueError(f"No finished runs match {values.validate}.")
        specs += [r.config["input"]["source"] for r in runs]
        accuracies = [r.result["student_top1"] for r in runs]
      if not specs:
        raise ValueError("Name at least one image (or --validate=GLOB).")
      scores = score_sources(specs, values.config, values.patches)
    except cli.USER_ERRORS as e:
      cli.exit_with_user_error(e)
    print(scores_markdown(scores, accuracies))
    output: dict[str, Any] = {"scores": [dataclasses.asdict(s) for s in scores]}
    if accuracies is not None:
      output["student_top1"] = accuracies
      output["correlations"] = correlation_table(scores, accuracies)
      print(correlation_markdown(output["correlations"]))
    if values.out:
      workdir_lib.write_json(values.out, output)

  return main


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(_define_flags())
