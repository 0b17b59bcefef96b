"""Batches made ahead in threads, handed out in step order.

The clip generators (audio, video) make each step's batch with numpy on the
host; this overlaps that work with training while keeping the order, so a
run's batches do not depend on the thread count.
"""

import collections
import concurrent.futures
import itertools
from typing import Any, Callable, Iterator


def ordered_batches(load: Callable[[int], Any], start_step: int, *,
                    workers: int, ahead: int, name: str) -> Iterator[Any]:
  """load(start_step), load(start_step + 1), ... from `workers` threads.

  The first batch is made before returning, so bad inputs fail here rather
  than inside a worker thread later.

  Args:
    load: step -> batch, thread-safe.
    start_step: the first step.
    workers: threads making batches.
    ahead: batches in flight; 0 makes them in the caller's thread.
    name: thread name prefix (shows in stack dumps).
  """
  first = load(start_step)

  def generate():
    yield first
    steps = itertools.count(start_step + 1)
    if ahead <= 0:
      yield from map(load, steps)
      return
    with concurrent.futures.ThreadPoolExecutor(
        max(1, workers), thread_name_prefix=name) as pool:
      pending = collections.deque(pool.submit(load, next(steps))
                                  for _ in range(ahead))
      while True:
        batch = pending.popleft().result()
        pending.append(pool.submit(load, next(steps)))
        yield batch

  return generate()
