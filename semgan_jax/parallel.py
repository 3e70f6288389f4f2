"""Device mesh, shardings and global batches: one code path for 1 CPU, N GPUs or a TPU pod."""

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process) with axis `data`."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device (parameters, optimizer state)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) dimension over the `data` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_global_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Raises a ValueError unless the batch splits evenly over devices and processes."""
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  if global_batch_size % n_dev or global_batch_size % n_proc:
    raise ValueError(
      f'config.data.batch_size={global_batch_size} must be divisible by the number of devices '
      f'({n_dev}) and of processes ({n_proc}).'
    )


def make_global_batch(local_batch, mesh: Mesh):
  """Assembles each process's slice of the batch into globally sharded `jax.Array`s.

  Args:
    local_batch: pytree of numpy arrays, this process's rows of the global batch.
    mesh: the device mesh.

  Returns:
    The same pytree of `jax.Array`s of global shape, sharded over `data`.
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
