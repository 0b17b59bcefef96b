r"""Writes a PNG grid of patches of the chain, to eyeball the augmentation.

  python -m input_pipeline.show --source='$SID_SHARED_DIR/images/city.jpg' \
      --out=patches.png --patch_size=32 --num=64 --seed=0
  python -m input_pipeline.show --config=configs/x.py --out=patches.png

With --config, `config.input` of that ml_collections config file is used and
--source/--patch_size override it only when given explicitly.
"""

import math
import sys

import numpy as np
from PIL import Image

from input_pipeline import config as config_lib
from input_pipeline import train_data


def patch_grid(patches: np.ndarray, upscale: int = 1,
               separator: int = 1) -> np.ndarray:
  """Tiles uint8 [N, P, P, 3] patches into a near-square grid.

  Args:
    patches: the patches.
    upscale: integer nearest-neighbour magnification of each patch.
    separator: width in pixels of the white lines between patches.

  Returns:
    uint8 [H, W, 3] image.
  """
  num, size = patches.shape[0], patches.shape[1] * upscale
  cols = math.ceil(math.sqrt(num))
  rows = math.ceil(num / cols)
  step = size + separator
  grid = np.full((rows * step - separator, cols * step - separator, 3), 255,
                 np.uint8)
  for i, patch in enumerate(patches):
    big = patch.repeat(upscale, axis=0).repeat(upscale, axis=1)
    r, c = divmod(i, cols)
    grid[r * step:r * step + size, c * step:c * step + size] = big
  return grid


def write_patch_grid(input_cfg, out: str, num: int, seed: int) -> None:
  """Renders patches 0..num-1 and saves them as a PNG grid at `out`."""
  patches = train_data.load_patches(input_cfg, seed, np.arange(num))
  upscale = 2 if input_cfg.patch_size <= 32 else 1
  Image.fromarray(patch_grid(patches, upscale)).save(out, optimize=True)


def main(argv) -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("source", None, "Source spec (see sources.py).")
  flags.DEFINE_string("out", "patches.png", "Output PNG path.")
  flags.DEFINE_integer("patch_size", None, "Patch side P.")
  flags.DEFINE_integer("num", 64, "Number of patches.")
  flags.DEFINE_integer("seed", 0, "Data seed.")
  config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                  lock_config=False)
  flags_values = flags.FLAGS

  def run(_):
    if flags_values.config is not None:
      input_cfg = flags_values.config.input
    else:
      input_cfg = config_lib.default_input_config()
    if flags_values.source is not None:
      input_cfg.source = flags_values.source
    if flags_values.patch_size is not None:
      input_cfg.patch_size = flags_values.patch_size
    write_patch_grid(input_cfg, flags_values.out, flags_values.num,
                     flags_values.seed)
    print(f"Wrote {flags_values.num} patches of {input_cfg.source} to "
          f"{flags_values.out}")

  app.run(run, argv)


if __name__ == "__main__":
  main(sys.argv)
