"""Scores the selection pool with the frozen teacher, once, cached in the workdir.

Teacher-guided patch selection (input_pipeline/selection.py) needs the
teacher's logits and penultimate features on every pool patch. They are
computed on device before the first step and written atomically to
`<workdir>/selection/scores_<key>.npz`; the key covers everything that changes
them (the pool's patches, the teacher's weights, the compute dtype), so a
resumed run reads them back instead of scoring again, and a changed setting
never reuses stale scores.
"""

import io
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from big_vision_sid import paths
from big_vision_sid import targets
from big_vision_sid import train_step
from big_vision_sid import workdir as workdir_lib
from input_pipeline import selection
from input_pipeline import train_data

SELECTION_DIR = "selection"


def scores_key(config: ml_collections.ConfigDict) -> str:
  """Cache key of the pool scores of `config` (see the module docstring)."""
  teacher = config.teacher
  fields: dict[str, Any] = {
      "format": selection.SCORES_FORMAT,
      "pool": train_data.patch_set_fields(config.input, config.seed),
      "pool_size": selection.pool_size(config.input),
      "teacher": [teacher.name, teacher.format, teacher.checkpoint,
                  list(teacher.mean), list(teacher.std)],
      "compute_dtype": config.compute_dtype,
  }
  checkpoint = paths.expand(teacher.checkpoint or "")
  if os.path.isfile(checkpoint):
    fields["teacher_file"] = workdir_lib.file_identity(checkpoint)
  return workdir_lib.cache_key(fields)


def pool_weights(config: ml_collections.ConfigDict, target: targets.Target,
                 workdir: str) -> tuple[np.ndarray, float]:
  """Sampling weights over the pool, and the seconds spent scoring it.

  Args:
    config: the experiment config; `config.input.selection` names the
      selector.
    target: the distillation target; its network scores the pool.
    workdir: the run's directory (the scores are cached under it).

  Returns:
    float64 [P] weights summing to 1, and the scoring time (0 when the scores
    came from the cache).

  Raises:
    ValueError: the target has no network to score patches with.
  """
  if target.features is None:
    raise ValueError(f"input.selection='{config.input.selection}' needs a "
                     f"teacher to score patches; target '{config.target}' has "
                     "none.")
  path = (workdir_lib.as_path(workdir) / SELECTION_DIR
          / f"scores_{scores_key(config)}.npz")
  seconds = 0.0
  if path.exists():
    # Read whole: np.load needs a seekable file, which remote objects are not.
    with np.load(io.BytesIO(path.read_bytes())) as cached:
      scores = selection.PoolScores(cached["logits"], cached["features"])
  else:
    start = time.time()

    @jax.jit
    def score(variables, images):
      x = train_step.normalize(train_step.to_unit_float(images), target.mean,
                               target.std)
      return target.features(variables, x)

    variables = jax.device_put(target.variables)
    scores = selection.score_pool(
        train_data.patch_loader(config.input, config.seed),
        lambda images: jax.device_get(score(variables, jnp.asarray(images))),
        selection.pool_size(config.input))
    seconds = time.time() - start
    if jax.process_index() == 0:
      workdir_lib.atomic_write(path, lambda f: np.savez(
          f, logits=scores.logits, features=scores.features))
  return selection.pool_weights(config.input, scores, config.seed), seconds
