r"""Patch pipeline throughput: patches/s and patches per CPU-second.

  python benchmarks/patch_throughput.py [--seconds=5] [--quick]

Prints a table and one JSON line per setting. Uses city.jpg from the shared
directory, or skimage:astronaut when it is absent.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_sid import paths
from input_pipeline import config
from input_pipeline import train_data
# pylint: enable=g-import-not-at-top,wrong-import-position

SETTINGS = (
    # name, backend, patch_size, num_patches, batch_size
    ("tf 32px fixed", "tf", 32, 50_000, 128),
    ("tf 32px endless", "tf", 32, 0, 128),
    ("tf 224px", "tf", 224, 0, 32),
    ("jax(cpu) 32px", "jax", 32, 0, 128),
    ("jax(cpu) 224px", "jax", 224, 0, 32),
)


def _source() -> str:
  city = paths.shared_dir() / "images" / "city.jpg"
  return str(city) if city.exists() else "skimage:astronaut"


def measure(name, backend, patch_size, num_patches, batch_size, seconds):
  """Patches/s of `make_train_iterator` after one warm-up batch."""
  cfg = config.default_input_config()
  cfg.update(source=_source(), backend=backend, patch_size=patch_size,
             num_patches=num_patches, batch_size=batch_size,
             train_augment="flip_crop" if patch_size <= 32 else "rrc_flip")
  iterator = train_data.make_train_iterator(cfg, seed=0)
  next(iterator)
  batches = 0
  wall, cpu = time.perf_counter(), time.process_time()
  while time.perf_counter() - wall < seconds:
    images = next(iterator)["image"]
    getattr(images, "block_until_ready", lambda: None)()
    batches += 1
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  patches = batches * batch_size
  return {"setting": name, "source": cfg.source, "patches_per_s":
          patches / wall, "patches_per_cpu_s": patches / max(cpu, 1e-9),
          "batch_size": batch_size, "seconds": wall, "cpus": os.cpu_count()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=5.0,
                      help="Measuring time per setting.")
  parser.add_argument("--quick", action="store_true",
                      help="1 s per setting, 32 px tf only (a smoke test).")
  args = parser.parse_args()
  settings = SETTINGS[:1] if args.quick else SETTINGS
  seconds = 1.0 if args.quick else args.seconds
  results = [measure(*setting, seconds) for setting in settings]
  print(f"{'setting':<18}{'patches/s':>12}{'per CPU-s':>12}")
  for r in results:
    print(f"{r['setting']:<18}{r['patches_per_s']:>12.0f}"
          f"{r['patches_per_cpu_s']:>12.0f}")
  for r in results:
    print(json.dumps(r))


if __name__ == "__main__":
  main()
