"""Fixtures shared by the trainer tests."""

import numpy as np
import pytest


@pytest.fixture(name="eval_npz")
def fixture_eval_npz(tmp_path):
  """A 20-image random CIFAR-shaped eval set, as an `npz:` spec."""
  rng = np.random.default_rng(0)
  path = tmp_path / "eval.npz"
  np.savez(path, image=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
           label=rng.integers(0, 10, 20))
  return f"npz:{path}"
