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
