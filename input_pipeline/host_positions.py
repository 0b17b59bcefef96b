"""The global sample positions one host makes at each step.

Step s of a global batch B covers positions s*B ... s*B + B - 1; host h of H
makes the h-th contiguous slice of B/H of them. Every generator (image
patches, audio clips, fake videos) draws its samples from these positions,
so a run's data does not depend on how many hosts share it.
"""

import numpy as np


class HostPositions:
  """This host's slice of every step's global batch."""

  def __init__(self, batch_size: int, process_index: int, process_count: int):
    if batch_size % process_count or not 0 <= process_index < process_count:
      raise ValueError(
          f"batch_size {batch_size} must split evenly over process_count "
          f"{process_count} (process_index {process_index}).")
    self.batch_size = batch_size
    self.per_host = batch_size // process_count
    self.first_row = process_index * self.per_host

  def at(self, step: int) -> np.ndarray:
    """int64 [per_host]: the positions this host makes at `step`."""
    start = step * self.batch_size + self.first_row
    return np.arange(start, start + self.per_host, dtype=np.int64)
