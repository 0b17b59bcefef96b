r"""What a cached fixed patch set costs against rendering it on the fly.

  python benchmarks/patch_cache_cost.py [--patch_size=224] [--num=256]

Renders `num` patches of the City image (or skimage:astronaut without the
shared directory), stores them as raw uint8 (what `input.cache_dir` writes),
PNG and JPEG (quality 95), and prints per format: bytes per patch, disk for
ImageNet's 1,281,167 patches, and the decode rate on one core, next to the
render rate of the same patches on one core. Run it on an idle machine.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import input_pipeline
from big_vision_sid import paths
from input_pipeline import config
from input_pipeline.image import patch_params
from input_pipeline.image import renderer
from input_pipeline.image import sources
# pylint: enable=g-import-not-at-top,wrong-import-position

IMAGENET_PATCHES = 1_281_167


def _rate(fn, items, seconds=3.0) -> float:
  """Items per second of fn over `items`, repeated for about `seconds`."""
  fn(items[0])
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    for item in items:
      fn(item)
    count += len(items)
  return count / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--patch_size", type=int, default=224)
  parser.add_argument("--num", type=int, default=256)
  parser.add_argument("--batch", type=int, default=32)
  args = parser.parse_args()
  tf = input_pipeline.import_tensorflow()
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  city = paths.shared_dir() / "images" / "city.jpg"
  image = sources.load_source_image(str(city) if city.exists()
                                    else "skimage:astronaut")
  cfg = config.default_input_config()
  render = renderer.make_renderer("tf", image, args.patch_size)
  batches = [patch_params.sample_patch_params(
      image.shape[:2], args.patch_size, 0,
      np.arange(start, start + args.batch), cfg)
             for start in range(0, args.num, args.batch)]
  patches = np.concatenate([render.render_numpy(b) for b in batches])
  render_rate = _rate(render.render_numpy, batches) * args.batch

  encoded = {
      "raw uint8 (cache_dir)": [p.tobytes() for p in patches],
      "PNG": [tf.io.encode_png(p).numpy() for p in patches],
      "JPEG q95": [tf.io.encode_jpeg(p, quality=95).numpy() for p in patches],
  }
  shape = patches.shape[1:]
  decoders = {
      "raw uint8 (cache_dir)": lambda b: np.frombuffer(b, np.uint8).reshape(
          shape).copy(),
      "PNG": lambda b: tf.io.decode_png(b).numpy(),
      "JPEG q95": lambda b: tf.io.decode_jpeg(b).numpy(),
  }
  print(f"{args.num} City patches of {args.patch_size} px; one core "
        f"(tf intra/inter-op threads = 1).")
  print(f"render on the fly: {render_rate:,.0f} patches/s")
  print("| format | bytes/patch | disk for 1,281,167 patches | decode patches/s "
        "(1 core) | max error |")
  print("|---|---|---|---|---|")
  for name, blobs in encoded.items():
    size = np.mean([len(b) for b in blobs])
    decoded = np.stack([decoders[name](b) for b in blobs])
    error = np.abs(decoded.astype(int) - patches).max()
    rate = _rate(decoders[name], blobs)
    print(f"| {name} | {size:,.0f} | {size * IMAGENET_PATCHES / 1e9:,.1f} GB "
          f"| {rate:,.0f} | {error} |")


if __name__ == "__main__":
  main()
