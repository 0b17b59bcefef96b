"""Output confidence on training patches vs. real test images (Fig. 3).

The confidence of a prediction is its temperature-scaled max softmax,
max_c softmax(logits / T)_c, with T the run's distillation temperature by
default (what the loss sees). The paper finds the teacher less confident on
the patches than on real images, and the student following it.
"""

from matplotlib.figure import Figure
import numpy as np

from big_vision_sid.analysis import common

_BINS = 40


def max_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
  """[N] max_c softmax(logits / T)_c."""
  return common.softmax(logits, temperature).max(axis=-1)


def analyze(context: common.Context) -> common.Section:
  temperature = context.temperature
  scores = {
      (net.name, split): max_softmax(context.logits(net, split), temperature)
      for net in context.networks for split in (common.PATCHES, common.TEST)}
  numbers = {"temperature": temperature,
             "patches": len(context.patches), "test_images": len(context.test[0])}
  for (name, split), values in scores.items():
    numbers[f"mean_confidence_{name}_{split}"] = float(values.mean())
    numbers[f"median_confidence_{name}_{split}"] = float(np.median(values))

  everything = np.concatenate(list(scores.values()))
  low, high = float(everything.min()), float(everything.max())
  pad = 0.02 * (high - low) + 1e-6
  bins = np.linspace(low - pad, high + pad, _BINS + 1)
  figure = Figure(figsize=(5.2 * len(context.networks), 3.8))
  axes = figure.subplots(1, len(context.networks), squeeze=False)[0]
  for ax, net in zip(axes, context.networks):
    for split, color, label in ((common.PATCHES, "tab:orange", "training patches"),
                                (common.TEST, "tab:blue", "test images")):
      values = scores[(net.name, split)]
      ax.hist(values, bins=bins, density=True, alpha=0.55, color=color,
              label=f"{label} (n={len(values)}, mean {values.mean():.3f})")
      ax.axvline(values.mean(), color=color, linestyle="--", linewidth=1)
    ax.set_title(net.label)
    ax.set_xlabel(f"max softmax at T={temperature:g}")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
  figure.tight_layout()
  means = ", ".join(
      f"{name} {numbers[f'mean_confidence_{name}_patches']:.3f} on patches vs "
      f"{numbers[f'mean_confidence_{name}_test']:.3f} on test images"
      for name in (net.name for net in context.networks))
  caption = (f"Max softmax at T={temperature:g} on {len(context.patches)} "
             f"training patches and {len(context.test[0])} test images; mean "
             f"{means}.")
  return common.Section("Output confidence",
                        [context.save_figure(figure, "confidence.png", caption)],
                        numbers)
