"""Teacher-guided patch selection: which pool patch each training sample shows.

Beyond the paper. The teacher's top-1 over patches of one image is skewed
(over City patches about three quarters fall in four CIFAR-10 classes), so
rare classes get little signal early. With `input.selection` set, a pool of
candidate patches (the fixed set when `num_patches > 0`, else the first
`selection_pool` patches of the chain) is scored ONCE by the frozen teacher
(logits and penultimate features, cached in the workdir), a selector turns
the scores into sampling weights, and sample position q shows pool patch
`searchsorted(cdf, u_q)`, u_q a counter-based uniform of (seed, q). So the
stream stays a pure function of (seed, q): deterministic, exactly resumable
and host-sharded like the unselected one; distillation-time augmentation and
mixing still apply on top. Selectors (`SELECTORS`):

  class_balanced  weight ∝ 1 / count of the patch's teacher top-1 class: every
                  class the teacher ever predicts is drawn equally often.
  entropy         weight ∝ the entropy of the teacher's softmax at
                  `selection_temperature`: favours uncertain patches.
  kmeans          k-means (`selection_clusters`, seeded) of the teacher's
                  penultimate features; clusters are drawn evenly, patches
                  uniformly within their cluster (after Soni, Saeed & Asano
                  2024, federated learning from a single shared image).
"""

import dataclasses
from typing import Any, Callable

import numpy as np

from big_vision_sid.registry import Registry
from input_pipeline import randomness

_SAMPLE_STREAM = 211
_KMEANS_STREAM = 212
# Bump when scoring changes, so that stale score caches are not reused.
SCORES_FORMAT = 1

SELECTORS = Registry("patch selection")

# images uint8 [n, ...] -> (logits float32 [n, C], features float32 [n, D]).
ScoreFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class PoolScores:
  """The frozen teacher's view of the candidate pool (row i = pool patch i)."""
  logits: np.ndarray
  features: np.ndarray


def is_enabled(input_cfg: Any) -> bool:
  """Whether `input.selection` asks for teacher-guided selection."""
  name = input_cfg.get("selection", "none")
  if name != "none" and name not in SELECTORS:
    SELECTORS.get(name)  # Raises the registry's error naming the known ones.
  return name != "none"


def pool_size(input_cfg: Any) -> int:
  """Number P of candidate patches: the fixed set, or `selection_pool`."""
  size = input_cfg.num_patches or input_cfg.selection_pool
  if size <= 0:
    raise ValueError(f"input.selection_pool must be > 0, got {size}.")
  return int(size)


def score_pool(render: Callable[[np.ndarray], np.ndarray], score_fn: ScoreFn,
               size: int, chunk: int = 1024) -> PoolScores:
  """Scores pool patches 0..size-1, `chunk` at a time.

  Args:
    render: patch indices -> uint8 patches.
    score_fn: patches -> (logits, features).
    size: the pool size P.
    chunk: patches rendered and scored per call.

  Returns:
    The pool's scores.
  """
  logits, features = [], []
  for start in range(0, size, chunk):
    chunk_logits, chunk_features = score_fn(
        render(np.arange(start, min(start + chunk, size))))
    logits.append(np.asarray(chunk_logits, np.float32))
    features.append(np.asarray(chunk_features, np.float32))
  return PoolScores(np.concatenate(logits), np.concatenate(features))


def pool_weights(input_cfg: Any, scores: PoolScores, seed: int) -> np.ndarray:
  """float64 [P] sampling weights (sum 1) of the configured selector."""
  weights = np.asarray(
      SELECTORS.get(input_cfg.selection)(scores, input_cfg, seed), np.float64)
  if weights.shape != (len(scores.logits),) or not np.all(np.isfinite(weights)):
    raise ValueError(f"Selector '{input_cfg.selection}' gave invalid weights.")
  if np.any(weights < 0) or weights.sum() <= 0:
    raise ValueError(f"Selector '{input_cfg.selection}' gave no positive weight.")
  return weights / weights.sum()


def sample_pool_indices(weights: np.ndarray, seed: int,
                        positions: np.ndarray) -> np.ndarray:
  """Pool index shown at each global sample position (with replacement)."""
  cdf = np.cumsum(weights)
  u = randomness.hash_uniform(seed, np.asarray(positions, np.int64),
                                _SAMPLE_STREAM) * cdf[-1]
  return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
  z = logits.astype(np.float64) / temperature
  z -= z.max(axis=1, keepdims=True)
  p = np.exp(z)
  return p / p.sum(axis=1, keepdims=True)


@SELECTORS.register("class_balanced")
def _class_balanced(scores: PoolScores, input_cfg: Any, seed: int) -> np.ndarray:
  del input_cfg, seed
  top1 = np.argmax(scores.logits, axis=1)
  counts = np.bincount(top1, minlength=scores.logits.shape[1])
  return 1.0 / counts[top1]


@SELECTORS.register("entropy")
def _entropy(scores: PoolScores, input_cfg: Any, seed: int) -> np.ndarray:
  del seed
  temperature = float(input_cfg.selection_temperature)
  if temperature <= 0:
    raise ValueError(
        f"input.selection_temperature must be > 0, got {temperature}.")
  p = _softmax(scores.logits, temperature)
  entropy = -np.sum(p * np.log(np.maximum(p, 1e-30)), axis=1)
  # A floor keeps confident patches drawable rather than excluded.
  return entropy + 1e-3 * np.log(p.shape[1])


def kmeans(features: np.ndarray, num_clusters: int, seed: int,
           iterations: int = 25) -> np.ndarray:
  """Cluster ids [N] of Lloyd's k-means with k-means++ seeding (counter RNG).

  Args:
    features: float [N, D].
    num_clusters: K, at most N.
    seed: seeds the k-means++ draws.
    iterations: Lloyd iterations (stops early when assignments settle).

  Returns:
    int64 [N] ids in [0, K).
  """
  x = np.asarray(features, np.float64)
  num = len(x)
  if not 0 < num_clusters <= num:
    raise ValueError(f"k-means needs 0 < clusters <= {num} points, got "
                     f"{num_clusters}.")
  squared_norms = np.sum(x * x, axis=1)
  centres = [x[int(randomness.hash_uniform(seed, 0, _KMEANS_STREAM) * num)]]
  nearest = np.sum((x - centres[0]) ** 2, axis=1)
  for k in range(1, num_clusters):
    cdf = np.cumsum(nearest)
    u = randomness.hash_uniform(seed, k, _KMEANS_STREAM) * cdf[-1]
    centre = x[min(int(np.searchsorted(cdf, u, side="right")), num - 1)]
    centres.append(centre)
    nearest = np.minimum(nearest, np.sum((x - centre) ** 2, axis=1))
  centres = np.stack(centres)
  assignment = None
  for _ in range(iterations):
    distances = (squared_norms[:, None] - 2.0 * x @ centres.T
                 + np.sum(centres * centres, axis=1)[None, :])
    new_assignment = np.argmin(distances, axis=1)
    if assignment is not None and np.array_equal(new_assignment, assignment):
      break
    assignment = new_assignment
    for k in range(num_clusters):
      members = assignment == k
      if members.any():  # An emptied cluster keeps its old centre.
        centres[k] = x[members].mean(axis=0)
  return assignment


@SELECTORS.register("kmeans")
def _kmeans_even(scores: PoolScores, input_cfg: Any, seed: int) -> np.ndarray:
  clusters = kmeans(scores.features, int(input_cfg.selection_clusters), seed)
  sizes = np.bincount(clusters)
  return 1.0 / sizes[clusters]
