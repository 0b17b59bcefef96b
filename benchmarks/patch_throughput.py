r"""Patch pipeline throughput: patches/s and patches per CPU-second.

  python benchmarks/patch_throughput.py [--seconds=5] [--quick] [--cost]

Prints a table and one JSON line per setting. Uses city.jpg from the shared
directory, or skimage:astronaut when it is absent. `--cost` also prints what
XLA's cost model says each compiled stage of the jax renderer costs per patch
(`jax.jit(...).lower(...).compile().cost_analysis()`: FLOPs and bytes
accessed), on whatever device jax uses.
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


def jax_cost_per_patch(patch_size: int, batch_size: int) -> list[dict]:
  """XLA's FLOPs and bytes per patch of each stage of the jax renderer, and
  its wall time per patch (the stage alone, on warm inputs)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from input_pipeline.image import augment  # pylint: disable=g-import-not-at-top
  from input_pipeline.image import patch_params  # pylint: disable=g-import-not-at-top
  from input_pipeline.image import renderer  # pylint: disable=g-import-not-at-top
  from input_pipeline.image import sources  # pylint: disable=g-import-not-at-top
  from input_pipeline.image import ops  # pylint: disable=g-import-not-at-top
  image = sources.load_source_image(_source())
  cfg = config.default_input_config()
  pyramid = patch_params.build_pyramid(image, patch_size)
  params = patch_params.render_params(patch_params.sample_patch_params(
      image.shape[:2], patch_size, 0, np.arange(batch_size), cfg))
  params = {k: params[k] for k in patch_params.RENDER_KEYS}
  affine = augment.sample_augment_affine("rrc_flip", 0, np.arange(batch_size),
                                         patch_size)
  stages = {name: jax.jit(fn) for name, fn in
            renderer._render_stages(ops.JAX_OPS, pyramid).items()}  # pylint: disable=protected-access
  inputs = {"pyramid_taps": lambda: (params,)}
  taps = stages["pyramid_taps"](params)
  inputs["sample"] = lambda: (pyramid.atlas,) + tuple(taps)
  words = stages["sample"](*inputs["sample"]())
  for name in renderer.JITTER_STAGES:
    inputs[name] = lambda words=words: (words, params)
    words = stages[name](words, params)
  inputs["augment_taps"] = lambda: (words, affine)
  augment_taps = stages["augment_taps"](words, affine)
  inputs["augment_sample"] = lambda: (words,) + tuple(augment_taps)
  inputs["to_uint8"] = lambda: (words,)
  inputs["to_words"] = lambda: (stages["to_uint8"](words),)
  rows = []
  for name, stage in stages.items():
    args = inputs[name]()
    cost = stage.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 1.0:
      jax.block_until_ready(stage(*args))
      calls += 1
    rows.append({"stage": name, "patch_size": patch_size,
                 "ms_per_patch": (time.perf_counter() - start) * 1e3 /
                                 (calls * batch_size),
                 "flops_per_patch": cost.get("flops", 0.0) / batch_size,
                 "bytes_per_patch": cost.get("bytes accessed", 0.0) / batch_size,
                 "device": jax.devices()[0].platform})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=5.0,
                      help="Measuring time per setting.")
  parser.add_argument("--quick", action="store_true",
                      help="1 s per setting, 32 px tf only (a smoke test).")
  parser.add_argument("--cost", action="store_true",
                      help="Also print XLA's cost analysis of the jax stages.")
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
  if args.cost:
    rows = [row for size, batch in ((32, 256), (224, 8))
            for row in jax_cost_per_patch(size, batch)]
    print(f"{'stage':<16}{'px':>5}{'MFLOP/patch':>13}{'MB/patch':>10}"
          f"{'ms/patch':>10}")
    for row in rows:
      print(f"{row['stage']:<16}{row['patch_size']:>5}"
            f"{row['flops_per_patch'] / 1e6:>13.2f}"
            f"{row['bytes_per_patch'] / 1e6:>10.2f}"
            f"{row['ms_per_patch']:>10.3f}")
    for row in rows:
      print(json.dumps(row))


if __name__ == "__main__":
  main()
