"""Feature space: a joint t-SNE of patches and test images (paper Fig. 5).

The student's penultimate features of the training patches and the real test
images are embedded together by scikit-learn's Barnes-Hut t-SNE (seeded,
PCA-initialised; features wider than 50 are first reduced to 50 by PCA, as
is customary), coloured by the student's predicted class, patches and test
images marked differently, with a few thumbnails placed on the map. The
number behind the picture: how many of each test image's nearest neighbours
(in feature space, not on the map) are patches, against the share of patches
in the pool; near chance means the patches cover the region of feature space
the real images fall in.
"""

from matplotlib import offsetbox
from matplotlib.figure import Figure
import numpy as np
from sklearn import decomposition
from sklearn import manifold
from sklearn import neighbors

from big_vision_sid.analysis import common

_PCA_DIMS = 50
_NEIGHBOURS = 10


def embed(features: np.ndarray, *, seed: int, perplexity: float = 30.0
          ) -> tuple[np.ndarray, float]:
  """2-D t-SNE of features [N, D]: (embedding [N, 2], final KL divergence).

  Deterministic for a given seed. Raises ValueError for fewer points than
  the perplexity needs (3 * perplexity + 1).
  """
  features = np.asarray(features, np.float32)
  if len(features) <= 3 * perplexity:
    raise ValueError(f"t-SNE with perplexity {perplexity:g} needs more than "
                     f"{3 * perplexity:g} points, got {len(features)}.")
  if features.shape[1] > _PCA_DIMS:
    features = decomposition.PCA(_PCA_DIMS, random_state=seed).fit_transform(
        features)
  tsne = manifold.TSNE(n_components=2, perplexity=perplexity, init="pca",
                       learning_rate="auto", random_state=seed)
  return tsne.fit_transform(features), float(tsne.kl_divergence_)


def patch_neighbour_share(features: np.ndarray, is_patch: np.ndarray,
                          k: int = _NEIGHBOURS) -> float:
  """Mean share of patches among each test point's k nearest other points."""
  index = neighbors.NearestNeighbors(n_neighbors=k + 1).fit(features)
  _, nearest = index.kneighbors(features[~is_patch])
  return float(is_patch[nearest[:, 1:]].mean())


def spread_points(points: np.ndarray, count: int, seed: int) -> np.ndarray:
  """`count` indices of `points` far apart (greedy farthest-point sampling)."""
  if count <= 0 or not len(points):
    return np.zeros((0,), np.int64)
  chosen = [int(np.random.default_rng(seed).integers(len(points)))]
  distance = np.linalg.norm(points - points[chosen[0]], axis=1)
  for _ in range(min(count, len(points)) - 1):
    chosen.append(int(distance.argmax()))
    distance = np.minimum(distance,
                          np.linalg.norm(points - points[chosen[-1]], axis=1))
  return np.array(chosen)


def analyze(context: common.Context) -> common.Section:
  options, student = context.options, context.student
  features = np.concatenate([context.features(student, common.PATCHES),
                             context.features(student, common.TEST)])
  predicted = np.concatenate([context.logits(student, common.PATCHES),
                              context.logits(student, common.TEST)]).argmax(-1)
  images = np.concatenate([context.patches, context.test[0]])
  is_patch = np.arange(len(features)) < len(context.patches)
  points, kl = embed(features, seed=options.seed,
                     perplexity=options.tsne_perplexity)
  share = patch_neighbour_share(features, is_patch)
  chance = (is_patch.sum() - 1) / (len(is_patch) - 1)
  numbers = {"points": len(points), "patches": int(is_patch.sum()),
             "test_images": int((~is_patch).sum()), "kl_divergence": kl,
             "perplexity": options.tsne_perplexity,
             "test_neighbours_that_are_patches": share,
             "patch_share_of_pool": float(chance), "neighbours": _NEIGHBOURS}

  figure = Figure(figsize=(9.5, 8))
  ax = figure.subplots()
  colors = [f"C{c % 10}" for c in predicted]
  ax.scatter(*points[is_patch].T, c=[colors[i] for i in np.flatnonzero(is_patch)],
             s=5, alpha=0.35, marker="o", linewidths=0)
  ax.scatter(*points[~is_patch].T, c=[colors[i] for i in np.flatnonzero(~is_patch)],
             s=22, marker="^", edgecolors="black", linewidths=0.3)
  thumbs = spread_points(points, options.tsne_thumbnails, options.seed)
  for i in thumbs:
    box = offsetbox.OffsetImage(common.to_uint8(images[i]), zoom=1.3)
    ax.add_artist(offsetbox.AnnotationBbox(
        box, points[i], frameon=True, pad=0.15,
        bboxprops=dict(edgecolor="tab:orange" if is_patch[i] else "black",
                       linewidth=1.5)))
  names = context.class_names
  handles = [ax.scatter([], [], c=f"C{c % 10}", s=30, label=names[c])
             for c in range(min(len(names), 10))]
  handles += [ax.scatter([], [], c="grey", s=10, marker="o", label="patch"),
              ax.scatter([], [], c="grey", s=30, marker="^",
                         edgecolors="black", label="test image")]
  ax.legend(handles=handles, fontsize=8, loc="upper left",
            bbox_to_anchor=(1.01, 1.0), title="predicted class")
  ax.set_title(f"t-SNE of {student.label} features: {numbers['patches']} "
               f"patches (dots), {numbers['test_images']} test images (triangles)",
               fontsize=10)
  ax.set_xticks([])
  ax.set_yticks([])
  figure.tight_layout()
  caption = (
      f"Joint t-SNE of the student's penultimate features (perplexity "
      f"{options.tsne_perplexity:g}, KL {kl:.2f}), coloured by predicted class;"
      f" thumbnails framed orange are patches. {100 * share:.1f}% of each test "
      f"image's {_NEIGHBOURS} nearest neighbours in feature space are patches "
      f"(patches are {100 * chance:.1f}% of the points).")
  return common.Section("Feature space (t-SNE)",
                        [context.save_figure(figure, "tsne.png", caption)], numbers)
