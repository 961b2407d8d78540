"""Meshes and partition rules: data parallelism, FSDP and tensor parallelism over a `Mesh`.

The mesh has three axes, named by config (default `("data", "fsdp", "model")`), in that order;
the model axis is the innermost, so that a tensor-parallel group is neighbouring devices (one
host, one NVLink domain), where its per-layer all-reduces are cheapest. The batch is split over
the data and fsdp axes and replicated over the model axis. Parameters and optimizer state:
  * a leaf that the model family's partition rules name (a regex on its path -> a dimension) is
    split along that dimension across the model axis: Megatron-style tensor parallelism, where
    the family says which dimensions are attention heads or hidden units;
  * every leaf is split over the fsdp axis along its largest remaining dimension that fsdp
    divides (ZeRO-3 style: XLA gathers it for the matmuls), and replicated over the data axis.
A study without tensor parallelism may leave `mesh.model` out (size 1) and name two axes.

Activations can be pinned with `constrain` by logical names ("batch", "model"), which map to the
mesh of the surrounding `jax.set_mesh` (the loop traces its step under it); outside one it does
nothing, so the model code runs unchanged on one device.
"""

import os
import re

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from research.errors import require

MODEL_AXIS = "model"   # the default name of the third axis when the config names two


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


def axis_names(configured) -> tuple[str, str, str]:
  """(data, fsdp, model) axis names; two configured names get the default model axis name."""
  names = tuple(configured)
  if len(names) == 2:
    names += (MODEL_AXIS,)
  require(len(names) == 3 and len(set(names)) == 3, "mesh.axis_names", configured,
          "must be three distinct names (data, fsdp, model), or two (data, fsdp)")
  return names


def mesh_shape(mesh_cfg, n_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, model) sizes; data = -1 takes the devices fsdp x model leave. Validates them
  against n_devices."""
  fsdp, data, model = mesh_cfg.fsdp, mesh_cfg.data, getattr(mesh_cfg, "model", 1)
  require(isinstance(fsdp, int) and fsdp >= 1, "mesh.fsdp", fsdp, "must be a positive integer")
  require(isinstance(model, int) and model >= 1, "mesh.model", model,
          "must be a positive integer")
  require(data == -1 or (isinstance(data, int) and data >= 1), "mesh.data", data,
          "must be a positive integer or -1 (all)")
  require(n_devices % fsdp == 0, "mesh.fsdp", fsdp,
          f"must divide the number of devices ({n_devices})")
  require(n_devices % (fsdp * model) == 0, "mesh.model", model,
          f"mesh fsdp x model = {fsdp} x {model} must divide the number of devices "
          f"({n_devices})")
  data = n_devices // (fsdp * model) if data == -1 else data
  require(data * fsdp * model <= n_devices, "mesh.data", mesh_cfg.data,
          f"mesh data x fsdp x model = {data} x {fsdp} x {model} = {data * fsdp * model} is "
          f"larger than the {n_devices} available devices")
  axis_names(mesh_cfg.axis_names)
  return data, fsdp, model


def make_mesh(mesh_cfg) -> jax.sharding.Mesh:
  shape = mesh_shape(mesh_cfg, jax.device_count())
  devices = np.asarray(jax.devices()[: int(np.prod(shape))]).reshape(shape)
  return jax.sharding.Mesh(devices, axis_names(mesh_cfg.axis_names),
                           axis_types=(AxisType.Auto,) * 3)


def batch_axes(mesh) -> tuple[str, str]:
  """The axes the batch is split over: data and fsdp (the model axis holds replicas)."""
  return tuple(mesh.axis_names[:2])


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data and fsdp axes."""
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(shape: tuple[int, ...], fsdp_axis: str, fsdp_size: int,
               model_dim: int | None = None, model_axis: str | None = None) -> P:
  """`model_dim` (if any) on the model axis; then the largest other dimension that fsdp_size
  divides on the fsdp axis; the rest (scalars, the indivisible) replicated."""
  axes = [None] * len(shape)
  if model_dim is not None:
    axes[model_dim] = model_axis
  if fsdp_size > 1:
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
      if axes[dim] is None and shape[dim] % fsdp_size == 0:
        axes[dim] = fsdp_axis
        break
  return P(*axes) if any(axes) else P()


def leaf_path(path) -> str:
  """A pytree key path as '/'-joined names, e.g. 'opt_state/1/0/mu/block_0/attn/qkv/kernel'."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def model_dim(path: str, shape: tuple[int, ...], rules, model_size: int) -> int | None:
  """The dimension the first matching rule (regex searched in the path, dimension) splits across
  the model axis; None when no rule matches or the axis has size 1."""
  if model_size == 1:
    return None
  for pattern, dim in rules:
    if re.search(pattern, path):
      require(shape[dim] % model_size == 0, "mesh.model", model_size,
              f"must divide dimension {dim} of {path} (shape {shape}), which tensor "
              "parallelism splits")
      return dim % len(shape)
  return None


def state_sharding(mesh: jax.sharding.Mesh, abstract_state, rules=()):
  """NamedShardings for every leaf of a (possibly abstract) train state.

  `rules`: (regex, dimension) pairs from the model family (e.g.
  `research.models.transformer.TENSOR_PARALLEL_RULES`); a leaf whose path matches has that
  dimension split across the model axis, parameters and their optimizer moments alike.
  """
  _, fsdp_axis, model_axis = mesh.axis_names
  fsdp_size, model_size = mesh.shape[fsdp_axis], mesh.shape[model_axis]

  def sharding(path, x):
    shape = tuple(x.shape)
    dim = model_dim(leaf_path(path), shape, rules, model_size)
    return NamedSharding(mesh, param_spec(shape, fsdp_axis, fsdp_size, dim, model_axis))

  return jax.tree_util.tree_map_with_path(sharding, abstract_state)


def constrain(x: jax.Array, *logical: str | None) -> jax.Array:
  """x pinned to a sharding given by one logical name per dimension: "batch" (the data and fsdp
  axes), "model" (the model axis) or None (replicated), under the mesh of the surrounding
  `jax.set_mesh` when its model axis is larger than 1. Elsewhere (one device, no mesh, data
  parallelism alone, where XLA's propagation from the batch suffices) x is returned unchanged.
  A name whose axes do not divide the dimension is left out."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or len(mesh.axis_names) != 3 or mesh.shape[mesh.axis_names[2]] == 1:
    return x
  physical = {"batch": batch_axes(mesh), "model": mesh.axis_names[2], None: None}

  def fits(axes, size: int) -> bool:
    names = axes if isinstance(axes, tuple) else (axes,)
    return size % int(np.prod([mesh.shape[n] for n in names if n is not None])) == 0

  spec = [physical[name] if fits(physical[name], size) else None
          for name, size in zip(logical, x.shape)]
  return jax.lax.with_sharding_constraint(x, P(*spec))
