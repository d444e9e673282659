"""Device placement of batches: the data-parallel mesh and batch sharding.

The input pipeline (`input_pipeline`) yields process-local NumPy batches;
`shard_batch` lays them out as global `jax.Array`s over a 1-D `data` mesh
spanning every device of every process (`make_mesh`), the batch axis split
over the devices. The same code runs on 1 CPU, 8 fake CPU devices, a GPU box
or a multi-host TPU pod.
"""

from typing import Dict, Union

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices (all processes), axis name `data`."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def shard_batch(batch: Dict[str, np.ndarray],
                mesh_or_sharding: Union[Mesh, jax.sharding.Sharding]
                ) -> Dict[str, jax.Array]:
  """Process-local NumPy batch -> global `jax.Array`s split on the batch axis.

  Args:
    batch: this process's batch (leading axis b); non-numeric entries (e.g.
      `id`) are dropped.
    mesh_or_sharding: a mesh (batch axis sharded as `P('data')`, checked to
      divide over the local devices) or any sharding (used as is).

  Returns:
    dict of arrays of leading size b * process_count, each device holding
    b / local_device_count rows of this process's batch.
  """
  is_mesh = isinstance(mesh_or_sharding, Mesh)
  sharding = (NamedSharding(mesh_or_sharding, P("data")) if is_mesh
              else mesh_or_sharding)
  num_local = len(sharding.addressable_devices)
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.dtype.kind not in "biuf":
      continue
    if is_mesh and (v.ndim == 0 or v.shape[0] % num_local):
      raise ValueError(
          f"batch[{k!r}] has shape {v.shape}: the process-local batch must "
          f"divide over the {num_local} local devices; choose a batch size "
          "that is a multiple of the device count.")
    out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out
