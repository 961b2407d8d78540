"""Size, FLOP and MFU accounting shared by every model family.

A model family counts its own parameters and FLOPs beside its code (for the transformer:
`research.models.transformer.param_counts` and `train_flops_per_token`) and reports them in the
terms defined here: `ParamCounts` (total / embedding / non-embedding) and a named FLOP convention.

Training FLOPs per token, by convention (each is named wherever a number is shown):
  * "6N":     6 * N_non_embedding (Kaplan et al. 2020, the C ~ 6N rule).
  * "kaplan": 6 * N_non_embedding + 6 * n_layer * n_ctx * d_attn (Kaplan et al. 2020, Table 1:
              forward 2N + 2 n_layer n_ctx d_attn, training three times the forward).
  * "full":   3 x the forward matmuls (Hoffmann et al. 2022, App. F, without the softmax and norm
              terms); for the transformer the full L x L attention is charged (see its counter).

MFU is against a data-sheet peak on GPUs/TPUs and a matmul peak measured in-process on CPUs.

Memory: `MemoryEstimate` (bytes per device of parameters, gradients, optimizer state and one
microbatch's activations), printed by the loop before compiling with a warning when it exceeds
`device_memory_bytes()`; the family counts its activations (transformer.activation_bytes).
"""

import dataclasses
import time

import numpy as np

from research.errors import UserError

FLOP_CONVENTIONS = ("6N", "kaplan", "full")


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  total: int
  embedding: int
  non_embedding: int


def check_convention(convention: str) -> None:
  if convention not in FLOP_CONVENTIONS:
    raise UserError(f"FLOP convention {convention!r}: allowed are {', '.join(FLOP_CONVENTIONS)}")


# Dense peak FLOP/s per chip from the vendors' data sheets, by compute dtype. Keys are matched
# as substrings of `jax.Device.device_kind`.
PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "L4": {"bfloat16": 121e12, "float32": 30.3e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12 / 2},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12 / 2},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12 / 2},
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12 / 2},
}


def table_peak_flops(device_kind: str, dtype: str) -> float | None:
  for key, peaks in PEAK_FLOPS.items():
    if key.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def measured_matmul_peak(n: int = 1024, dtype: str = "float32", repeats: int = 5) -> float:
  """Best-of-`repeats` FLOP/s of one jitted n x n matmul on the default device.

  On a shared CPU this is a snapshot of the load at the time it runs: MFU against it can exceed
  100% when the machine was busier while measuring than while training.
  """
  import jax
  import jax.numpy as jnp
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype=dtype)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best


def device_peak_flops(dtype: str, n_devices: int) -> tuple[float, str]:
  """(peak FLOP/s summed over n_devices, where the number came from)."""
  import jax
  kind = jax.devices()[0].device_kind
  peak = table_peak_flops(kind, dtype)
  if peak is not None:
    return peak * n_devices, f"data sheet ({kind}, {dtype})"
  # CPU (or an unknown chip): a measured matmul peak for the whole process.
  return measured_matmul_peak(dtype=dtype), f"measured {dtype} matmul peak ({kind})"


def mfu(flops_per_token: float, tokens_per_second: float, peak_flops: float) -> float:
  return flops_per_token * tokens_per_second / peak_flops


# Memory.

@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes per device of one training step, by what holds them: the parameters, their gradients
  and the optimizer state (exact, from the train state's shapes and shardings) and the
  activations kept for the backward of one microbatch (the model family's analytic count). XLA's
  workspace, the batch and fragmentation come on top: a floor, meant to say before compiling
  whether a config can fit."""
  params: float
  gradients: float
  optimizer: float
  activations: float

  @property
  def total(self) -> float:
    return self.params + self.gradients + self.optimizer + self.activations

  def describe(self) -> str:
    return (f"{format_bytes(self.params)} parameters + {format_bytes(self.gradients)} gradients + "
            f"{format_bytes(self.optimizer)} optimizer state + {format_bytes(self.activations)} "
            f"activations (one microbatch) = {format_bytes(self.total)}")


def format_bytes(n: float) -> str:
  for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if n >= size:
      return f"{n / size:.3g} {unit}"
  return f"{n:.0f} B"


def sharded_bytes(tree, shardings) -> float:
  """Bytes one device holds of a tree of (abstract) arrays laid out by a matching tree of
  shardings."""
  import jax
  return float(sum(np.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
                   for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings))))


def device_memory_bytes() -> int | None:
  """The memory one device may use (`memory_stats()['bytes_limit']`); None where the backend
  does not say (CPUs)."""
  import jax
  stats = jax.local_devices()[0].memory_stats()
  return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def memory_lines(estimate: MemoryEstimate, limit: int | None) -> list[str]:
  """The estimate as printed at the start of a run, and a warning when it exceeds `limit`."""
  where = (f"of the device's {format_bytes(limit)}" if limit else
           "the device's memory limit is unknown on this backend")
  lines = [f"memory per device (estimate, before compiling): {estimate.describe()}, {where}"]
  if limit and estimate.total > limit:
    lines.append(f"warning: the memory estimate ({format_bytes(estimate.total)}) exceeds the "
                 f"device's memory ({format_bytes(limit)}); more microbatches "
                 "(train.microbatches), rematerialisation or a larger mesh.fsdp / mesh.model "
                 "would lower it")
  return lines
