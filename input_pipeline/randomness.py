"""Counter-based randomness shared by every sample generator.

Every random number of the input pipeline is `hash_uniform(seed, index,
stream, counter)`: a splitmix64 hash, so any sample's randomness is a pure
function of its index, in any batching, on any host, resumed at any step.
Streams keep random quantities independent; the ranges in use are

  1-15     image patch chain (image/patch_params.py)
  101-107  distillation-time augmentation (image/augment.py)
  201      epoch permutation of a fixed set (train_data.py)
  211-212  teacher-guided selection (selection.py)
  301-302  per-sample noise inputs (image/sources.py)
  401-406  audio clips of one recording (audio/clips.py)
  411-414  augmentation of labelled audio clips (audio/samples.py)
  421      noise recordings (audio/recording.py)
  501-516  fake clips of one image (video/clips.py)
  521-525  distillation-time views of fake clips (video/augment.py)
  531      AugMix of fake clips (video/augment.py)

and a new generator takes a fresh range.

numpy only: this module runs on accelerator hosts without TensorFlow.
"""

from typing import Any

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64 finaliser: a bijective avalanche on uint64."""
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def _as_u64(value) -> np.ndarray:
  value = np.asarray(value)
  if value.dtype == np.uint64:
    return value
  return (value.astype(np.int64)).astype(np.uint64)


def hash_uniform(seed: int, index, stream: int, counter=0) -> np.ndarray:
  """Uniform [0, 1) float64 from a hash of (seed, index, stream, counter).

  Args:
    seed: any Python int (negative values wrap to uint64).
    index: int array (broadcasts with `counter`).
    stream: which random quantity (keeps quantities independent).
    counter: extra counter, e.g. a resampling attempt or a pixel id.

  Returns:
    float64 array of the broadcast shape of index and counter.
  """
  with np.errstate(over="ignore"):
    h = _mix(np.uint64(seed % 2**64) ^ np.uint64(_GOLDEN))
    h = _mix(h ^ (_as_u64(index) + np.uint64(_GOLDEN)))
    h = _mix(h ^ (np.uint64(stream) * np.uint64(_GOLDEN)))
    h = _mix(h ^ (_as_u64(counter) + np.uint64(0xD1B54A32D192ED03)))
  return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


class Draws:
  """The uniform draws of one clip: hashes of (seed, key, stream, counter).

  Each call consumes the next counters, so a fixed sequence of calls gives
  the same numbers whatever else runs.
  """

  def __init__(self, seed: int, key: int, stream: int):
    self._seed, self._key, self._stream = seed, int(key), stream
    self._count = 0

  def uniform(self, size: int | None = None) -> Any:
    """A float in [0, 1) (size None) or float64 [size]."""
    num = 1 if size is None else size
    counters = np.arange(self._count, self._count + num, dtype=np.int64)
    self._count += num
    values = hash_uniform(self._seed, self._key, self._stream,
                                     counters)
    return float(values[0]) if size is None else values

  def normal(self, size: int) -> np.ndarray:
    """Standard normal float64 [size] (Box-Muller on two uniforms each)."""
    radius = np.sqrt(-2.0 * np.log1p(-self.uniform(size)))
    return radius * np.cos(2.0 * np.pi * self.uniform(size))
