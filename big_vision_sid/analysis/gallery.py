"""Patch gallery (Fig. 9): training patches captioned with the teacher's top class.

The first `--gallery_size` of the analysed training patches, each titled with
the teacher's top-1 class and its probability (softmax at T = 1: how sure the
teacher itself is); a run without a teacher shows the student's.
"""

import math

from matplotlib.figure import Figure
import numpy as np

from big_vision_sid.analysis import common

_COLUMNS = 8


def analyze(context: common.Context) -> common.Section:
  net = context.teacher or context.student
  count = min(context.options.gallery_size, len(context.patches))
  patches = context.patches[:count]
  probabilities = common.softmax(context.logits(net, common.PATCHES)[:count])
  top1 = probabilities.argmax(-1)
  confidence = probabilities.max(-1)
  names = context.class_names
  columns = min(_COLUMNS, count)
  rows = math.ceil(count / columns)
  figure = Figure(figsize=(1.45 * columns, 1.6 * rows + 0.4))
  axes = figure.subplots(rows, columns, squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.set_axis_off()
    if i < count:
      ax.imshow(common.to_uint8(patches[i]), interpolation="nearest")
      ax.set_title(f"{names[top1[i]]} {100 * confidence[i]:.0f}%", fontsize=8)
  figure.suptitle(f"training patches and the {net.label}'s top-1 (softmax, T=1)",
                  fontsize=10)
  figure.tight_layout()
  counts = np.bincount(top1, minlength=len(names))
  numbers = {"patches": count, "captioned_by": net.label,
             "mean_top1_probability": float(confidence.mean()),
             "top1_counts": counts.tolist()}
  common_class = names[int(counts.argmax())]
  caption = (f"{count} training patches titled with the {net.label}'s top-1 "
             f"class and probability (mean {100 * confidence.mean():.0f}%; most "
             f"often {common_class}, {counts.max()} of {count}).")
  return common.Section("Patch gallery",
                        [context.save_figure(figure, "gallery.png", caption)],
                        numbers)
