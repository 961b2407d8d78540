"""One source of truth for model size, FLOPs and MFU.

Parameter counts (for the decoder-only transformer of `research.models.transformer`):
  * total: every trained parameter.
  * embedding: the token embedding, the learned position embedding and, when untied, the
    unembedding matrix.
  * non_embedding: total - embedding. This is Kaplan et al. (2020)'s N (their Sec. 2.1 excludes
    the embedding matrices; we keep the small norm parameters in it rather than drop them).

Training FLOPs per token, by convention (each is named wherever a number is shown):
  * "6N":     6 * N_non_embedding (Kaplan et al. 2020, the C ~ 6N rule).
  * "kaplan": 6 * N_non_embedding + 6 * n_layer * n_ctx * d_attn (Kaplan et al. 2020, Table 1:
              forward 2N + 2 n_layer n_ctx d_attn, training three times the forward).
  * "full":   3 x the forward matmuls: QKV and output projections, the full L x L score and
              value products, the MLP and the logits (Hoffmann et al. 2022, App. F, without the
              softmax and norm terms). Like Hoffmann et al.'s count and PaLM's MFU, it charges the
              whole L x L attention although causal attention can skip the masked half: ours
              (research.models.attention) computes (n + 1) / 2n of it with n query blocks, e.g.
              3/4 at context 256, as PyTorch's causal scaled_dot_product_attention also skips.
"""

import dataclasses
import time

import numpy as np

from research.errors import UserError
from research.models.transformer import TransformerConfig

FLOP_CONVENTIONS = ("6N", "kaplan", "full")


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  total: int
  embedding: int
  non_embedding: int


def param_counts(cfg: TransformerConfig) -> ParamCounts:
  D, F, V, HK = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_heads * cfg.d_head
  norm = D if cfg.norm == "rmsnorm" else 2 * D
  per_layer = 3 * D * HK + HK * D + 2 * D * F + 2 * norm
  embedding = V * D + (cfg.context * D if cfg.positions == "learned" else 0)
  embedding += 0 if cfg.tied_embeddings else D * V
  non_embedding = cfg.n_layers * per_layer + norm
  return ParamCounts(embedding + non_embedding, embedding, non_embedding)


def forward_flops_per_token(cfg: TransformerConfig, seq_len: int) -> int:
  """Matmul FLOPs of one forward pass per token at sequence length seq_len ("full")."""
  D, F, V, HK = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_heads * cfg.d_head
  attention = 2 * 3 * D * HK + 2 * seq_len * HK * 2 + 2 * HK * D
  mlp = 2 * 2 * D * F
  return cfg.n_layers * (attention + mlp) + 2 * D * V


def train_flops_per_token(cfg: TransformerConfig, seq_len: int, convention: str = "full") -> int:
  n = param_counts(cfg).non_embedding
  if convention == "6N":
    return 6 * n
  if convention == "kaplan":
    return 6 * n + 6 * cfg.n_layers * seq_len * cfg.n_heads * cfg.d_head
  if convention == "full":
    return 3 * forward_flops_per_token(cfg, seq_len)
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
