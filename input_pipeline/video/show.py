r"""Writes fake clips of one image as an animated GIF or a PNG frame strip.

  python -m input_pipeline.video.show \
      --source='video:$SID_SHARED_DIR/images/city.jpg' \
      --out=docs/fake_clips_city.gif --num=4 --size=112 --seed=0
  python -m input_pipeline.video.show --config=configs/video_ucf101_x3d.py \
      --out=samples.png --samples

An .gif out is animated (the clips side by side, 12 frames per second, the
official generator's rate); a .png is a strip, one row per clip, one column
per frame. By default the fake clips themselves are shown (clips 0..num-1,
every frame, at input.video.frame_size or --size); with --samples, what the
student sees at sample positions 0..num-1 (clip_frames frames at
patch_size, with the scale, crop, flip and AugMix of those positions).
"""

import sys

import numpy as np
from PIL import Image

from input_pipeline import config as config_lib
from input_pipeline import train_data
from input_pipeline.image import renderer as renderer_lib
from input_pipeline.video import PREFIX
from input_pipeline.video import clips
from input_pipeline.video import samples

FPS = 12


def fake_clips(input_cfg, seed: int, indices: np.ndarray,
               size: int | None = None) -> np.ndarray:
  """Fake clips `indices` as generated, every frame: uint8 [n, F, S, S, 3].

  Args:
    input_cfg: the input config (source `video:IMAGE`).
    seed: data seed.
    indices: int clip indices [n].
    size: frame side S; input.video.frame_size if None.
  """
  video = input_cfg.video
  size = size or video.frame_size
  image = samples.load_image(input_cfg)
  renderer = renderer_lib.make_renderer(input_cfg.backend, image, size)
  indices = np.asarray(indices, np.int64).reshape(-1)
  params = clips.sample_clip_params(image.shape[:2], seed, indices, input_cfg)
  frames = np.broadcast_to(np.arange(video.frames), (len(indices),
                                                     video.frames))
  rendered = renderer.render_numpy(clips.render_params(
      params, frames, video.frames, clips.identity_view(len(indices), size),
      size))
  return rendered.reshape((len(indices), video.frames) + rendered.shape[1:])


def training_samples(input_cfg, seed: int, num: int) -> np.ndarray:
  """What the student sees at positions 0..num-1: uint8 [num, T, P, P, 3]."""
  cfg = input_cfg.copy_and_resolve_references()
  cfg.batch_size = num
  return next(train_data.make_train_iterator(cfg, seed=seed))["image"]


def write_clips(clip_array: np.ndarray, out: str, separator: int = 2) -> None:
  """Saves clips uint8 [n, F, S, S, 3] as an animated .gif or a .png strip."""
  num, length, size = clip_array.shape[:3]
  if out.lower().endswith(".gif"):
    frames = []
    for f in range(length):
      row = np.full((size, num * (size + separator) - separator, 3), 255,
                    np.uint8)
      for i in range(num):
        row[:, i * (size + separator):i * (size + separator) + size] = (
            clip_array[i, f])
      frames.append(Image.fromarray(row).quantize(
          colors=256, method=Image.Quantize.MEDIANCUT,
          dither=Image.Dither.NONE))
    frames[0].save(out, save_all=True, append_images=frames[1:],
                   duration=round(1000 / FPS), loop=0, optimize=True)
    return
  strip = np.full((num * (size + separator) - separator,
                   length * (size + separator) - separator, 3), 255, np.uint8)
  for i in range(num):
    for f in range(length):
      top, left = i * (size + separator), f * (size + separator)
      strip[top:top + size, left:left + size] = clip_array[i, f]
  Image.fromarray(strip).save(out, optimize=True)


def main(argv) -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("source", None, f"Video source, '{PREFIX}IMAGE'.")
  flags.DEFINE_string("out", "fake_clips.gif", "Output .gif or .png path.")
  flags.DEFINE_integer("num", 4, "Number of clips.")
  flags.DEFINE_integer("size", None, "Frame side of the fake clips.")
  flags.DEFINE_integer("seed", 0, "Data seed.")
  flags.DEFINE_bool("samples", False, "Show the student's training samples.")
  config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                  lock_config=False)
  flags_values = flags.FLAGS

  def run(_):
    if flags_values.config is not None:
      input_cfg = flags_values.config.input
    else:
      input_cfg = config_lib.default_input_config()
      input_cfg.source = f"{PREFIX}{input_cfg.source}"
    if flags_values.source is not None:
      input_cfg.source = flags_values.source
    if flags_values.samples:
      shown = training_samples(input_cfg, flags_values.seed, flags_values.num)
    else:
      shown = fake_clips(input_cfg, flags_values.seed,
                         np.arange(flags_values.num), flags_values.size)
    write_clips(shown, flags_values.out)
    print(f"Wrote {flags_values.num} clips of {shown.shape[1]} frames of "
          f"{input_cfg.source} to {flags_values.out}")

  app.run(run, argv)


if __name__ == "__main__":
  main(sys.argv)
