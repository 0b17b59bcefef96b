"""Feeding batches to the devices ahead of the step, and no further.

`prefetch_to_device` keeps a few host batches in flight to the devices, so a
step never waits on a transfer; `Throttle` bounds how many steps the host
dispatches ahead of the devices, so errors surface promptly and buffers are
not pinned without limit.
"""

import collections
from typing import Any, Iterator

import jax
import numpy as np


def prefetch_to_device(
    batches: Iterator[Any], sharding: jax.sharding.Sharding, size: int
) -> Iterator[Any]:
  """Keeps `size` host batches (pytrees of arrays) in flight to the devices.

  Every array, numpy or jax (from the on-device generator), holds this
  process's rows of the global batch.
  """
  queue: collections.deque[Any] = collections.deque()

  def put_array(x):
    return jax.make_array_from_process_local_data(
        sharding, x if isinstance(x, jax.Array) else np.asarray(x))

  def put(batch):
    return jax.tree.map(put_array, batch)

  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


class Throttle:
  """Bounds the steps dispatched ahead of the device.

  Waiting on step k-2's output keeps one step queued behind the running one,
  so the device never idles, while the host cannot run arbitrarily far ahead
  (which would delay error detection and pin buffers).
  """

  def __init__(self, max_in_flight: int):
    self._pending: collections.deque[jax.Array] = collections.deque()
    self._max = max_in_flight

  def add(self, token: jax.Array) -> None:
    self._pending.append(token)
    while len(self._pending) > self._max:
      self._pending.popleft().block_until_ready()
