"""Meshes and partition rules: data parallelism and FSDP over a `jax.sharding.Mesh`.

The mesh has two axes, named by config (default `("data", "fsdp")`). The batch is split over
both axes; parameters and optimizer state are split over the fsdp axis along their largest
dimension that it divides (ZeRO-3 style: XLA gathers them for the matmuls), and replicated over
the data axis.
"""

import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from research.errors import require


def maybe_initialize_distributed() -> bool:
  """jax.distributed.initialize() when the environment describes a multi-process job.

  Either Slurm's (a job step of several tasks: JAX reads SLURM_* itself) or explicit variables:
  JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES, JAX_PROCESS_ID. On CPUs
  the processes' collectives go through gloo. Idempotent: a worker may train several runs.
  """
  if jax.distributed.is_initialized():
    return True
  multi_slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
  if "JAX_COORDINATOR_ADDRESS" not in os.environ and not multi_slurm:
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  explicit = {}
  if "JAX_NUM_PROCESSES" in os.environ:
    explicit = dict(num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                    process_id=int(os.environ["JAX_PROCESS_ID"]))
  jax.distributed.initialize(**explicit)
  return True


def mesh_shape(mesh_cfg, n_devices: int) -> tuple[int, int]:
  """(data, fsdp) sizes; data = -1 takes the devices fsdp leaves. Validates against n_devices."""
  fsdp, data = mesh_cfg.fsdp, mesh_cfg.data
  require(fsdp >= 1, "mesh.fsdp", fsdp, "must be a positive integer")
  require(data == -1 or data >= 1, "mesh.data", data, "must be a positive integer or -1 (all)")
  require(n_devices % fsdp == 0, "mesh.fsdp", fsdp,
          f"must divide the number of devices ({n_devices})")
  data = n_devices // fsdp if data == -1 else data
  require(data * fsdp <= n_devices, "mesh.data", mesh_cfg.data,
          f"mesh data x fsdp = {data} x {fsdp} = {data * fsdp} is larger than the "
          f"{n_devices} available devices")
  require(len(mesh_cfg.axis_names) == 2 and len(set(mesh_cfg.axis_names)) == 2,
          "mesh.axis_names", mesh_cfg.axis_names, "must be two distinct names (data, fsdp)")
  return data, fsdp


def make_mesh(mesh_cfg) -> jax.sharding.Mesh:
  data, fsdp = mesh_shape(mesh_cfg, jax.device_count())
  devices = np.asarray(jax.devices()[: data * fsdp]).reshape(data, fsdp)
  return jax.sharding.Mesh(devices, tuple(mesh_cfg.axis_names),
                           axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every mesh axis."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(shape: tuple[int, ...], fsdp_axis: str, fsdp_size: int) -> P:
  """Split the largest dimension that fsdp_size divides; replicate scalars and the indivisible."""
  if fsdp_size == 1 or not shape:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      return P(*[fsdp_axis if d == dim else None for d in range(len(shape))])
  return P()


def state_sharding(mesh: jax.sharding.Mesh, abstract_state):
  """NamedShardings for every leaf of a (possibly abstract) train state."""
  fsdp_axis = mesh.axis_names[1]
  fsdp_size = mesh.shape[fsdp_axis]
  return jax.tree.map(
      lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp_axis, fsdp_size)),
      abstract_state)
