"""Representation similarity: linear CKA between every pair of layers (Fig. 15, 17).

Linear centred kernel alignment (Kornblith et al. 2019) of two layers'
activations X [n, p] and Y [n, q] on the same n images compares their Gram
matrices K = X X^T and L = Y Y^T:

  CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).

Full batch, HSIC is the biased estimator tr(K H L H) / (n - 1)^2 (H the
centring matrix). Minibatch CKA (Nguyen et al. 2020, "Do wide and deep
networks learn the same things?") averages the unbiased estimator of Song et
al. (2012) over minibatches before forming the ratio, so it needs only
[b, b] Grams, never all activations at once, and independent features give
~0 instead of the biased estimator's positive floor (~p / (n + p) for
Gaussian features).

Layers are each block's output and the logits (`common.layer_names`); the
second network is the run's teacher, another run's student
(`--compare_workdir`) or a teacher checkpoint (`--compare_teacher`).
"""

from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import ml_collections
import numpy as np

from big_vision_sid import teachers
from big_vision_sid import workdir as workdir_lib
from big_vision_sid.analysis import common

# Heat maps annotate each cell up to this many layers per axis.
_ANNOTATE_MAX = 12


def _center(k: np.ndarray) -> np.ndarray:
  """H K H for a stack of Grams [..., n, n]."""
  k = k - k.mean(axis=-1, keepdims=True)
  return k - k.mean(axis=-2, keepdims=True)


def pairwise_hsic(grams_a: np.ndarray, grams_b: np.ndarray, *,
                  unbiased: bool) -> np.ndarray:
  """HSIC of every pair of Grams: [A, n, n] x [B, n, n] -> [A, B] (float64).

  Args:
    grams_a: linear-kernel Grams of A layers on the same n examples.
    grams_b: those of B layers.
    unbiased: Song et al.'s unbiased estimator (needs n >= 4), else the
      biased tr(K H L H) / (n - 1)^2.

  Raises:
    ValueError: fewer than 4 examples for the unbiased estimator.
  """
  a = np.asarray(grams_a, np.float64)
  b = np.asarray(grams_b, np.float64)
  n = a.shape[-1]
  if not unbiased:
    flat_a, flat_b = _center(a).reshape(len(a), -1), _center(b).reshape(len(b), -1)
    return flat_a @ flat_b.T / (n - 1) ** 2
  if n < 4:
    raise ValueError(f"Unbiased HSIC needs at least 4 examples, got {n}.")
  diagonal = np.eye(n, dtype=bool)
  a = np.where(diagonal, 0.0, a)  # K~: K with a zero diagonal.
  b = np.where(diagonal, 0.0, b)
  trace = a.reshape(len(a), -1) @ b.reshape(len(b), -1).T  # tr(K~ L~).
  sums_a, sums_b = a.sum(axis=(1, 2)), b.sum(axis=(1, 2))
  rows_a, rows_b = a.sum(axis=2), b.sum(axis=2)
  return (trace + np.outer(sums_a, sums_b) / ((n - 1) * (n - 2))
          - 2.0 / (n - 2) * rows_a @ rows_b.T) / (n * (n - 3))


def _self_hsic(grams: np.ndarray, *, unbiased: bool) -> np.ndarray:
  return np.array([pairwise_hsic(g[None], g[None], unbiased=unbiased)[0, 0]
                   for g in grams])


def cka_matrix(grams_a: np.ndarray, grams_b: np.ndarray, *,
               unbiased: bool = False) -> np.ndarray:
  """Linear CKA of every pair of layers from one batch's Grams: [A, B]."""
  return (pairwise_hsic(grams_a, grams_b, unbiased=unbiased)
          / np.sqrt(np.outer(_self_hsic(grams_a, unbiased=unbiased),
                             _self_hsic(grams_b, unbiased=unbiased))))


class MinibatchCKA:
  """Nguyen et al.'s minibatch CKA: unbiased HSICs summed over minibatches."""

  def __init__(self):
    self._cross = self._self_a = self._self_b = 0.0
    self.batches = 0

  def update(self, grams_a: np.ndarray, grams_b: np.ndarray) -> None:
    """Adds one minibatch: Grams [A, b, b] and [B, b, b] on the same examples."""
    self._cross = self._cross + pairwise_hsic(grams_a, grams_b, unbiased=True)
    self._self_a = self._self_a + _self_hsic(grams_a, unbiased=True)
    self._self_b = self._self_b + _self_hsic(grams_b, unbiased=True)
    self.batches += 1

  def result(self) -> np.ndarray:
    """[A, B] CKA (the 1/k of the means cancels in the ratio)."""
    if not self.batches:
      raise ValueError("MinibatchCKA has seen no minibatch.")
    return self._cross / np.sqrt(np.outer(self._self_a, self._self_b))


def minibatch_indices(num: int, batch_size: int, seed: int) -> list[np.ndarray]:
  """A seeded shuffle of range(num) cut into ceil(num / batch_size) near-equal
  minibatches (none smaller than 4 unless num is), so no image is dropped."""
  count = max(1, -(-num // batch_size))
  while count > 1 and num // count < 4:
    count -= 1
  order = np.random.default_rng(seed).permutation(num)
  return np.array_split(order, count)


def _flat_centered(outputs: list[jax.Array]) -> list[jax.Array]:
  """Per-layer features [b, D], centred over the batch (exact for both HSIC
  estimators, and it keeps the float32 Grams free of a large mean term)."""
  flat = [o.reshape(o.shape[0], -1) for o in outputs]
  return [f - jnp.mean(f, axis=0, keepdims=True) for f in flat]


def _grams_fn(net: common.Network, names: list[str]):
  """jitted `(variables, images [b, ...]) -> [L, b, b]` centred layer Grams."""
  return jax.jit(lambda variables, images: jnp.stack([
      f @ f.T for f in _flat_centered(common.capture_layers(
          net, variables, net.normalize(images), names))]))


def compared_network(context: common.Context) -> common.Network:
  """What the student is compared with: --compare_workdir, --compare_teacher
  (FORMAT:MODEL:PATH) or the run's own teacher."""
  options = context.options
  if options.compare_workdir:
    other = workdir_lib.load_run(options.compare_workdir)
    net = common.student_network(other)
    return common.Network(
        name="compare", label=f"{other.config.student.name} @{other.step} of "
        f"{workdir_lib.as_path(options.compare_workdir).name}",
        module=net.module, apply=net.apply, variables=net.variables,
        mean=net.mean, std=net.std)
  if options.compare_teacher:
    fmt, model, path = _parse_teacher_spec(options.compare_teacher)
    run_teacher = context.config.teacher
    teacher = teachers.load_teacher(ml_collections.ConfigDict(dict(
        name=model, format=fmt, checkpoint=path, mean=tuple(run_teacher.mean),
        std=tuple(run_teacher.std),
        num_classes=context.config.student.num_classes,
        image_size=context.config.eval.image_size)))
    return common.Network(
        name="compare", label=f"{model} ({workdir_lib.as_path(path).name})",
        module=teacher.model, apply=teacher.model.apply,
        variables=teacher.variables, mean=teacher.mean, std=teacher.std)
  if context.teacher is None:
    raise ValueError(
        "CKA compares the student with a second network, and this run has no "
        "teacher: pass --compare_workdir=W or --compare_teacher=FORMAT:MODEL:PATH.")
  return context.teacher


def _parse_teacher_spec(spec: str) -> tuple[str, str, str]:
  parts = spec.split(":", 2)
  if len(parts) != 3 or not all(parts):
    raise ValueError(
        f"--compare_teacher='{spec}' must be FORMAT:MODEL:PATH, e.g. "
        "akamaster_cifar_resnet:cifar_resnet20:$SID_SHARED_DIR/teachers/"
        "cifar10_resnet_akamaster/resnet20-12fca82f.th.")
  return parts[0], parts[1], parts[2]


def analyze(context: common.Context) -> common.Section:
  """Minibatch (and, on small sets, full-batch) CKA heat maps on the test set."""
  options = context.options
  other = compared_network(context)
  images, _ = context.test
  image_shape = images.shape[1:]
  names_a = common.layer_names(context.student, image_shape)
  names_b = common.layer_names(other, image_shape)
  grams_a, grams_b = _grams_fn(context.student, names_a), _grams_fn(other, names_b)
  accumulator = MinibatchCKA()
  batches = minibatch_indices(len(images), options.cka_batch_size, options.seed)
  for indices in batches:
    chunk = jnp.asarray(images[indices])
    accumulator.update(np.asarray(grams_a(context.student.variables, chunk)),
                       np.asarray(grams_b(other.variables, chunk)))
  minibatch = accumulator.result()
  full = None
  if len(images) <= options.cka_full_batch_max:
    # One forward pass over all images; XLA holds their activations.
    everything = jnp.asarray(images)
    full = cka_matrix(np.asarray(grams_a(context.student.variables, everything)),
                      np.asarray(grams_b(other.variables, everything)))
  numbers: dict[str, Any] = {
      "compared_with": other.label, "layers_student": names_a,
      "layers_compared": names_b, "images": len(images),
      "minibatches": accumulator.batches,
      "minibatch_size": int(max(len(b) for b in batches)),
      "minibatch_cka": minibatch.round(4).tolist(),
      "full_batch_cka": None if full is None else full.round(4).tolist(),
  }
  if len(names_a) == len(names_b):  # Same depth: layer i against layer i.
    numbers["mean_diagonal_cka"] = float(np.mean(np.diag(minibatch)))
    numbers["diagonal_cka"] = np.diag(minibatch).round(4).tolist()
    if full is not None:
      numbers["mean_diagonal_cka_full_batch"] = float(np.mean(np.diag(full)))
  logging.info("CKA %s vs %s over %d images: %s", context.student.label,
               other.label, len(images),
               f"mean diagonal {numbers['mean_diagonal_cka']:.3f}"
               if "mean_diagonal_cka" in numbers else "done")
  figure = _heatmaps(
      [("minibatch CKA (unbiased)", minibatch)]
      + ([("full-batch CKA", full)] if full is not None else []),
      names_a, names_b, context.student.label, other.label,
      annotate=max(len(names_a), len(names_b)) <= _ANNOTATE_MAX)
  diagonal = (f"; mean diagonal {numbers['mean_diagonal_cka']:.3f}"
              if "mean_diagonal_cka" in numbers else "")
  caption = (f"Linear CKA between the layers of the {context.student.label} and "
             f"{other.label} on {len(images)} test images ({accumulator.batches}"
             f" minibatches){diagonal}.")
  return common.Section("Representation similarity (CKA)",
                        [context.save_figure(figure, "cka.png", caption)], numbers)


def _heatmaps(panels: list[tuple[str, np.ndarray]], names_a: list[str],
              names_b: list[str], label_a: str, label_b: str, *,
              annotate: bool) -> Figure:
  """One CKA heat map per panel: rows the student's layers, columns the other's."""
  side = 0.4 * max(len(names_a), len(names_b)) + 2.0
  figure = Figure(figsize=(side * len(panels) + 1.0, side),
                  layout="constrained")
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  for ax, (title, matrix) in zip(axes, panels):
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
    ax.set_xticks(range(len(names_b)), names_b, rotation=60, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(names_a)), names_a, fontsize=8)
    ax.set_xlabel(label_b)
    ax.set_ylabel(label_a)
    ax.set_title(title)
    if annotate:
      for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                color="black" if value > 0.6 else "white")
  figure.colorbar(image, ax=list(axes), shrink=0.8, label="CKA")
  return figure
