"""Data parallelism over every device: the mesh, the shardings, the jitted step.

The train state and the target's variables are replicated; batches are split
along their first axis over a 1-D "data" mesh of all devices (of all hosts).
Auto axes let XLA propagate shardings (e.g. through CutMix's batch roll).
Both the trainer and the benchmark compile their step here, so they run the
same program.
"""

import dataclasses
from typing import Any, Callable

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class DataParallel:
  """The mesh and the two shardings of a data-parallel run."""
  mesh: jax.sharding.Mesh
  replicated: jax.sharding.NamedSharding
  data: jax.sharding.NamedSharding

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def jit_train_step(self, step_fn: Callable[..., Any]) -> Callable[..., Any]:
    """`step(state, target_variables, batch) -> (state, metrics)`, state donated."""
    return jax.jit(
        step_fn,
        in_shardings=(self.replicated, self.replicated, self.data),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=(0,))

  def jit_predict(self, predict_fn: Callable[..., Any],
                  has_target_logits: bool) -> Callable[..., Any]:
    """`predict(state, target_variables, images) -> (student, target logits)`."""
    return jax.jit(
        predict_fn,
        in_shardings=(self.replicated, self.replicated, self.data),
        out_shardings=(self.data, self.data if has_target_logits else None))

  def global_eval_batch(self, images: np.ndarray) -> jax.Array:
    """The global array of an eval batch that every host has read whole.

    Each host contributes its own contiguous rows, so multi-host evaluation
    needs no gather of the data.
    """
    rows = images.shape[0] // jax.process_count()
    first = jax.process_index() * rows
    return jax.make_array_from_process_local_data(
        self.data, images[first:first + rows])

  def check_divisible(self, name: str, batch_size: int) -> None:
    """Raises a one-line error unless `batch_size` splits over the devices."""
    if batch_size % self.num_devices:
      raise ValueError(
          f"{name}={batch_size} is not divisible by the {self.num_devices} "
          "devices; choose a multiple.")


def data_parallel() -> DataParallel:
  """A 1-D data mesh over all devices of all processes."""
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  return DataParallel(
      mesh=mesh,
      replicated=jax.NamedSharding(mesh, jax.sharding.PartitionSpec()),
      data=jax.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))


def device_description() -> str:
  """'cpu x4', 'NVIDIA H100 80GB HBM3 x8', ... (all processes' devices)."""
  devices = jax.devices()
  kind = devices[0].device_kind if devices[0].platform != "cpu" else "cpu"
  return f"{kind} x{len(devices)}"
