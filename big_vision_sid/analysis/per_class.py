"""Per-class view (App. B.13, Fig. 18-19): which classes the patches teach.

Per-class test accuracy of the student and the teacher, their confusion
matrices, and the student's per-class accuracy against how often each class
is the teacher's top-1 on the training patches: a class the source image
never evokes gets no signal. Spearman's rank correlation summarises that
relation (with 10 classes it is a weak test, and it is reported as such).
"""

from typing import Any

from matplotlib.figure import Figure
import numpy as np
from scipy import stats

from big_vision_sid.analysis import common


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray,
                       num_classes: int) -> np.ndarray:
  """[C] accuracy in % of each class (NaN for a class without examples)."""
  correct = np.bincount(labels, weights=predicted == labels,
                        minlength=num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return 100.0 * correct / counts


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """[C, C] counts: row the true class, column the predicted one."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels, predicted), 1)
  return matrix


def analyze(context: common.Context) -> common.Section:
  num_classes = context.config.student.num_classes
  names = context.class_names
  _, labels = context.test
  predictions = {net.name: context.logits(net, common.TEST).argmax(-1)
                 for net in context.networks}
  accuracy = {name: per_class_accuracy(p, labels, num_classes)
              for name, p in predictions.items()}
  confusion = {name: confusion_matrix(p, labels, num_classes)
               for name, p in predictions.items()}
  # Whose top-1 on the patches: the teacher's (the signal), else the student's.
  source_net = context.teacher or context.student
  patch_top1 = context.logits(source_net, common.PATCHES).argmax(-1)
  patch_share = 100.0 * np.bincount(patch_top1, minlength=num_classes) / len(
      patch_top1)
  rho, p_value = stats.spearmanr(patch_share, accuracy["student"])
  numbers: dict[str, Any] = {
      "class_names": names, "test_examples": int(np.bincount(
          labels, minlength=num_classes).sum()),
      "test_examples_per_class": np.bincount(labels, minlength=num_classes).tolist(),
      f"patch_top1_share_{source_net.name}": patch_share.round(2).tolist(),
      "spearman_student_accuracy_vs_patch_share": float(rho),
      "spearman_p_value": float(p_value)}
  for name in predictions:
    numbers[f"accuracy_{name}"] = float(100.0 * np.mean(predictions[name] == labels))
    numbers[f"per_class_accuracy_{name}"] = np.round(accuracy[name], 2).tolist()
    numbers[f"confusion_{name}"] = confusion[name].tolist()

  figure = Figure(figsize=(12, 4.2))
  bars, scatter = figure.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.6, 1]))
  width = 0.8 / len(predictions)
  for i, net in enumerate(context.networks):
    bars.bar(np.arange(num_classes) + (i - (len(predictions) - 1) / 2) * width,
             accuracy[net.name], width,
             label=f"{net.label} ({numbers[f'accuracy_{net.name}']:.1f}%)")
  bars.set_xticks(range(num_classes), names, rotation=30, ha="right", fontsize=8)
  bars.set_ylabel("test accuracy (%)")
  bars.set_ylim(0, 105)
  bars.legend(fontsize=8)
  bars.set_title("per-class test accuracy")
  scatter.scatter(patch_share, accuracy["student"], color="tab:blue")
  for c in range(num_classes):
    scatter.annotate(names[c], (patch_share[c], accuracy["student"][c]),
                     fontsize=7, xytext=(3, 3), textcoords="offset points")
  scatter.set_xlabel(f"share of patches with this {source_net.name} top-1 (%)")
  scatter.set_ylabel("student test accuracy (%)")
  scatter.set_title(f"Spearman rho {rho:.2f} (p={p_value:.2f}, "
                    f"{num_classes} classes)", fontsize=10)
  figure.tight_layout()
  accuracies = ", ".join(f"{name} {numbers[f'accuracy_{name}']:.1f}%"
                         for name in predictions)
  worst = names[int(np.nanargmin(accuracy["student"]))]
  best = names[int(np.nanargmax(accuracy["student"]))]
  caption = (f"Per-class test accuracy ({accuracies}; student best on {best}, "
             f"worst on {worst}) and the student's per-class accuracy against "
             f"the share of training patches the {source_net.name} puts in that "
             f"class (Spearman rho {rho:.2f}).")
  figures = [context.save_figure(figure, "per_class.png", caption)]

  matrix_figure = Figure(figsize=(5.4 * len(predictions) + 0.8, 4.8),
                         layout="constrained")
  axes = matrix_figure.subplots(1, len(predictions), squeeze=False)[0]
  for ax, net in zip(axes, context.networks):
    counts = confusion[net.name]
    rows = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(100.0 * counts / rows, vmin=0, vmax=100, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
      if value:
        ax.text(j, i, str(value), ha="center", va="center", fontsize=6,
                color="white" if value / rows[i, 0] > 0.6 else "black")
    ax.set_xticks(range(num_classes), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(num_classes), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(net.label, fontsize=10)
  matrix_figure.colorbar(image, ax=list(axes), shrink=0.8, label="% of the row")
  caption = (f"Confusion matrices on {len(labels)} test images (counts; colour: "
             "% of the true class).")
  figures.append(context.save_figure(matrix_figure, "confusion.png", caption))
  return common.Section("Per-class view", figures, numbers)
