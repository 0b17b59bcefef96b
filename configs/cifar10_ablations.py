r"""The paper's CIFAR-10 ablations as sweeps of the CPU-sized R56 -> R20 setup.

`get_config()` is the 2026-11 CPU demo: `configs/cifar10_r56_r20.py:cpu_demo`
with its ResNet-56 teacher and 650 steps (City image, endless fresh patches,
batch 128, Adam 1e-2); `get_sweep(axis)` returns the
cells of one ablation axis, each changing only what that axis is about:

  source        City, Animals, Bridge, uniform-noise image, skimage astronaut
                (paper: the source-image ablation).
  loss          kl, l1, l2, topk_kl, hard (paper: the distillation-loss
                ablation).
  augment       none (no flip/crop, no mixing), flip_crop, flip_crop+cutmix,
                flip_crop+mixup (paper: the augmentation ablation).
  dataset_size  num_patches 1,000 / 10,000 / 50,000 fixed patches vs an
                endless stream (paper: the number-of-patches ablation).
  noise_inputs  per-patch noise:uniform and noise:normal inputs vs City
                (paper Table 11).
  real_data     the 50,000 real CIFAR-10 training images (JPEG) vs City (the
                full-dataset baseline of paper Table 4: 92.29% vs 90.70% from
                one image).
  grid          City, Animals, noise:uniform_image: the small acceptance grid.

Paper numbers come from 1,000 epochs on a GPU; at 300-650 CPU steps only the
ordering of the cells is comparable, not the accuracies. Run one axis (cells
run one after another, finished cells are skipped, unfinished ones resume):

  python -m big_vision_sid.sweep --config=configs/cifar10_ablations.py:source \
      --sweep_from_config --workdir_root=workdirs/ablation_source \
      --set=total_steps=300

and tabulate and plot it:

  python -m big_vision_sid.report --workdirs='workdirs/ablation_source/*' \
      --out=workdirs/ablation_source_report

Add `--dry_run` to print one trainer command per cell instead (e.g. for a
cluster). Runtime: about 11 minutes per 650-step cell on a 2-core CPU (the
real_data cell first decodes the 50,000 JPEGs once, ~10 s, cached under
~/.cache/big_vision_sid/).
"""

from typing import Any

import ml_collections

from configs import cifar10_r56_r20
from configs import common

REAL_CIFAR10_TRAIN = "dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz"

_SOURCES = {
    "city": common.CITY,
    "animals": common.ANIMALS,
    "bridge": common.BRIDGE,
    "noise_image": "noise:uniform_image",
    "astronaut": "skimage:astronaut",
}


def _source_cells(names: tuple[str, ...]) -> list[dict[str, Any]]:
  return [{"name": name, "input.source": _SOURCES[name]} for name in names]


def _axes() -> dict[str, list[dict[str, Any]]]:
  return {
      "source": _source_cells(tuple(_SOURCES)),
      "loss": [{"name": loss, "distill.loss": loss}
               for loss in ("kl", "l1", "l2", "topk_kl", "hard")],
      "augment": [
          {"name": "none", "input.train_augment": "none",
           "mixing.mode": "none"},
          {"name": "flip_crop", "input.train_augment": "flip_crop",
           "mixing.mode": "none"},
          {"name": "flip_crop+cutmix", "input.train_augment": "flip_crop",
           "mixing.mode": "cutmix"},
          {"name": "flip_crop+mixup", "input.train_augment": "flip_crop",
           "mixing.mode": "mixup"},
      ],
      "dataset_size": [
          {"name": f"n{num}" if num else "endless", "input.num_patches": num}
          for num in (1_000, 10_000, 50_000, 0)],
      "noise_inputs": [
          {"name": "noise_uniform", "input.source": "noise:uniform"},
          {"name": "noise_normal", "input.source": "noise:normal"},
          {"name": "city", "input.source": common.CITY},
      ],
      "real_data": [
          {"name": "cifar10_train", "input.source": REAL_CIFAR10_TRAIN},
          {"name": "city", "input.source": common.CITY},
      ],
      "grid": _source_cells(("city", "animals", "noise_image")),
  }


AXES = tuple(_axes())


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The shared base of every cell; `arg` (the axis) only matters to sweeps."""
  if arg and arg not in AXES:
    raise ValueError(f"Unknown ablation axis '{arg}'; known: {AXES}.")
  config = cifar10_r56_r20.get_config("cpu_demo")
  # The ablations keep the recipe their measured numbers come from.
  config.teacher = common.akamaster_teacher(56)
  config.total_steps = 650
  return config


def get_sweep(arg: str | None = None) -> list[dict[str, Any]]:
  """The named override cells of ablation axis `arg` (see module docstring)."""
  axes = _axes()
  if arg not in axes:
    raise ValueError(
        f"Name an ablation axis, e.g. configs/cifar10_ablations.py:source; "
        f"got '{arg}', known: {AXES}.")
  return axes[arg]
