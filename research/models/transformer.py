"""Decoder-only transformer LM in Flax linen: pure `init` / `apply`.

Parameter names are regular so that accounting and per-parameter multipliers (muP) can be
assigned by path: `embed/embedding`, `pos_embed/embedding`, `block_{i}/{attn,mlp}/{name}/kernel`,
`block_{i}/{ln_attn,ln_mlp}/scale`, `ln_final/scale`, `unembed/kernel`.
Shape suffixes: B batch, L sequence, D d_model, H heads, K d_head, F d_ff, V vocab.

The family's size accounting lives here too (`param_counts`, `train_flops_per_token`), in the
terms of `research.accounting`: N total / embedding / non-embedding, where embedding is the token
embedding, the learned position embedding and, when untied, the unembedding matrix, and
non-embedding (Kaplan et al. 2020's N, Sec. 2.1) is the rest; we keep the small norm parameters
in it rather than drop them. The "full" FLOP convention counts the QKV and output projections,
the full L x L score and value products, the MLP and the logits; like Hoffmann et al.'s count and
PaLM's MFU it charges the whole L x L attention although causal attention can skip the masked
half: ours (research.models.attention) computes (n + 1) / 2n of it with n query blocks, e.g. 3/4
at context 256, as PyTorch's causal scaled_dot_product_attention also skips.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research import accounting
from research.models import attention, fused


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  vocab_size: int = 256
  d_model: int = 128
  n_layers: int = 4
  n_heads: int = 4
  d_ff: int = 512
  context: int = 256
  positions: str = "rotary"      # "rotary" | "learned"
  norm: str = "rmsnorm"          # "rmsnorm" | "layernorm"
  tied_embeddings: bool = True
  dtype: str = "float32"         # compute dtype; parameters stay float32, softmax in float32
  rope_base: float = 10000.0
  attention_block: int = 128     # queries per causal-attention block (attention.py); 0: one
  parametrization: str = "standard"  # "standard" | "mup" (see `lr_multiplier`)
  mup_base_d_model: int = 0      # muP's base shape; 0: this model's own (muP is then the SP)
  mup_base_d_head: int = 0

  @property
  def d_head(self) -> int:
    return self.d_model // self.n_heads

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def width_mult(self) -> float:
    """d_model / muP's base d_model (1 under the standard parametrization)."""
    if self.parametrization != "mup" or not self.mup_base_d_model:
      return 1.0
    return self.d_model / self.mup_base_d_model

  @property
  def attention_scale(self) -> float:
    """The factor on q.k: 1/sqrt(K) (standard); muP's 1/K, times sqrt(base K) so that the base
    shape has the standard value (Yang et al. 2022, Sec. 4: the attention logit scale 1/d_head)."""
    if self.parametrization != "mup":
      return self.d_head ** -0.5
    return (self.mup_base_d_head or self.d_head) ** 0.5 / self.d_head


def _norm(cfg: TransformerConfig, name: str) -> nn.Module:
  if cfg.norm == "rmsnorm":
    return nn.RMSNorm(epsilon=1e-6, dtype=cfg.compute_dtype, name=name)
  return nn.LayerNorm(epsilon=1e-6, dtype=cfg.compute_dtype, name=name)


def _dense(features, cfg: TransformerConfig, name: str, fan_in: int) -> nn.Dense:
  return nn.Dense(features, use_bias=False, dtype=cfg.compute_dtype, name=name,
                  kernel_init=nn.initializers.normal(stddev=fan_in ** -0.5))


def _dense_apply(features, cfg: TransformerConfig, name: str, fan_in: int, x_NxI) -> jax.Array:
  """`_dense` applied to x[..., I] as one 2-D matmul over all N leading positions.

  On XLA CPU the backward of a dot over [B, L, I] (weight gradient contracting B and L) made
  XLA recompute and transpose the output gradient (1.85x slower MLP fwd+bwd than 2-D).
  """
  y_NxO = _dense(features, cfg, name, fan_in)(x_NxI.reshape(-1, x_NxI.shape[-1]))
  return y_NxO.reshape(*x_NxI.shape[:-1], features)


def rotary(x_BxHxLxK: jax.Array, base: float) -> jax.Array:
  """Rotary position embedding (Su et al. 2021), rotating pairs (i, i + K/2); L on axis -2."""
  L, K = x_BxHxLxK.shape[-2:]
  # Tables as numpy constants: computed with jnp, XLA CPU fuses sin/cos into every element's loop.
  freq_K2 = base ** (-np.arange(0, K // 2, dtype=np.float32) * 2 / K)
  angle_LxK2 = np.arange(L, dtype=np.float32)[:, None] * freq_K2[None, :]
  sin_LxK2, cos_LxK2 = np.sin(angle_LxK2), np.cos(angle_LxK2)
  x1, x2 = jnp.split(x_BxHxLxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos_LxK2 - x2 * sin_LxK2, x2 * cos_LxK2 + x1 * sin_LxK2], axis=-1)
  return out.astype(x_BxHxLxK.dtype)


def _attention_chunks(L: int, block: int) -> int:
  """Query blocks for sequence length L: L / block when block divides L, else one block."""
  return L // block if block and L % block == 0 else 1


class Attention(nn.Module):
  """Causal self-attention, head-major ([B, H, L, K]): the attention matmuls are plain batched
  matmuls over B*H, with one transpose of q, k, v in and one of the output out. The softmax
  attention itself is `attention.causal_attention` (blocked over queries, own backward)."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    B, L, D = x_BxLxD.shape
    H, K = cfg.n_heads, cfg.d_head
    qkv_BxLx3HK = _dense_apply(3 * H * K, cfg, "qkv", D, x_BxLxD)
    qkv_3xBxHxLxK = qkv_BxLx3HK.reshape(B, L, 3, H, K).transpose(2, 0, 3, 1, 4)
    q_BxHxLxK, k_BxHxLxK, v_BxHxLxK = qkv_3xBxHxLxK[0], qkv_3xBxHxLxK[1], qkv_3xBxHxLxK[2]
    if cfg.positions == "rotary":
      q_BxHxLxK, k_BxHxLxK = rotary(q_BxHxLxK, cfg.rope_base), rotary(k_BxHxLxK, cfg.rope_base)
    if cfg.parametrization == "mup":  # causal_attention applies 1/sqrt(K) itself
      q_BxHxLxK = q_BxHxLxK * jnp.asarray(cfg.attention_scale * K ** 0.5, q_BxHxLxK.dtype)
    out_BxHxLxK = attention.causal_attention(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK,
                                             _attention_chunks(L, cfg.attention_block))
    out_BxLxHK = out_BxHxLxK.transpose(0, 2, 1, 3).reshape(B, L, H * K)
    return _dense_apply(D, cfg, "out", H * K, out_BxLxHK)


class Mlp(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    h_BxLxF = fused.gelu(_dense_apply(cfg.d_ff, cfg, "up", cfg.d_model, x_BxLxD))
    return _dense_apply(cfg.d_model, cfg, "down", cfg.d_ff, h_BxLxF)


class Block(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    x_BxLxD = x_BxLxD + Attention(self.cfg, name="attn")(_norm(self.cfg, "ln_attn")(x_BxLxD))
    return x_BxLxD + Mlp(self.cfg, name="mlp")(_norm(self.cfg, "ln_mlp")(x_BxLxD))


class Transformer(nn.Module):
  """tokens int32[B, L] -> logits float32[B, L, V]."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, tokens_BxL):
    cfg = self.cfg
    _, L = tokens_BxL.shape
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, name="embed",
                     embedding_init=nn.initializers.normal(stddev=1.0))
    x_BxLxD = embed(tokens_BxL).astype(cfg.compute_dtype)
    if cfg.positions == "learned":
      pos = nn.Embed(cfg.context, cfg.d_model, name="pos_embed",
                     embedding_init=nn.initializers.normal(stddev=0.02))
      x_BxLxD = x_BxLxD + pos(jnp.arange(L)[None, :]).astype(cfg.compute_dtype)
    for i in range(cfg.n_layers):
      x_BxLxD = Block(cfg, name=f"block_{i}")(x_BxLxD)
    x_BxLxD = _norm(cfg, "ln_final")(x_BxLxD)
    if cfg.tied_embeddings:
      B, L, D = x_BxLxD.shape
      logits_NxV = embed.attend(x_BxLxD.reshape(B * L, D)) * output_multiplier(cfg)
      logits_BxLxV = logits_NxV.reshape(B, L, cfg.vocab_size)
    else:
      logits_BxLxV = _dense_apply(cfg.vocab_size, cfg, "unembed", cfg.d_model, x_BxLxD)
      if cfg.parametrization == "mup":
        logits_BxLxV = logits_BxLxV / cfg.width_mult
    return logits_BxLxV.astype(jnp.float32)


def output_multiplier(cfg: TransformerConfig) -> float:
  """The tied readout's factor on x.E: 1/sqrt(d_model) (standard); under muP 1/sqrt(base
  d_model) / width_mult, so that logits stay O(1) as the width grows (Yang et al. 2022, Table 8:
  the output multiplier 1/width_mult, as mup's MuSharedReadout)."""
  if cfg.parametrization != "mup":
    return cfg.d_model ** -0.5
  return (cfg.mup_base_d_model or cfg.d_model) ** -0.5 / cfg.width_mult


HIDDEN_KERNELS = ("attn/qkv/kernel", "attn/out/kernel", "mlp/up/kernel", "mlp/down/kernel")


def lr_multiplier(cfg: TransformerConfig):
  """path -> the parameter's learning-rate multiplier: muP's Adam rule (Yang et al. 2022,
  Table 8) scales the hidden matrices' rate by 1 / width_mult, and keeps the embedding (input
  and tied readout, whose logits carry the output multiplier instead), the untied unembedding
  and the norm scales at the base rate. Hidden fan-ins (d_model, n_heads d_head, d_ff) are taken
  to grow together with d_model, as on the model ladder. 1 everywhere under the standard
  parametrization. Paths are '/'-joined parameter names, e.g. 'block_0/mlp/up/kernel'."""
  hidden = 1.0 / cfg.width_mult

  def multiplier(path: str) -> float:
    return hidden if path.endswith(HIDDEN_KERNELS) else 1.0

  return multiplier


def init_params(cfg: TransformerConfig, rng: jax.Array):
  """Parameters (float32) for `cfg`; pure."""
  tokens_BxL = jnp.zeros((1, cfg.context), jnp.int32)
  return Transformer(cfg).init(rng, tokens_BxL)["params"]


def apply(cfg: TransformerConfig, params, tokens_BxL) -> jax.Array:
  return Transformer(cfg).apply({"params": params}, tokens_BxL)


def param_counts(cfg: TransformerConfig) -> accounting.ParamCounts:
  D, F, V, HK = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_heads * cfg.d_head
  norm = D if cfg.norm == "rmsnorm" else 2 * D
  per_layer = 3 * D * HK + HK * D + 2 * D * F + 2 * norm
  embedding = V * D + (cfg.context * D if cfg.positions == "learned" else 0)
  embedding += 0 if cfg.tied_embeddings else D * V
  non_embedding = cfg.n_layers * per_layer + norm
  return accounting.ParamCounts(embedding + non_embedding, embedding, non_embedding)


def forward_flops_per_token(cfg: TransformerConfig, seq_len: int) -> int:
  """Matmul FLOPs of one forward pass per token at sequence length seq_len ("full")."""
  D, F, V, HK = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_heads * cfg.d_head
  attention_flops = 2 * 3 * D * HK + 2 * seq_len * HK * 2 + 2 * HK * D
  mlp = 2 * 2 * D * F
  return cfg.n_layers * (attention_flops + mlp) + 2 * D * V


def train_flops_per_token(cfg: TransformerConfig, seq_len: int, convention: str = "full") -> int:
  """Training FLOPs per token under a named convention (research.accounting.FLOP_CONVENTIONS)."""
  accounting.check_convention(convention)
  n = param_counts(cfg).non_embedding
  if convention == "6N":
    return 6 * n
  if convention == "kaplan":
    return 6 * n + 6 * cfg.n_layers * seq_len * cfg.n_heads * cfg.d_head
  return 3 * forward_flops_per_token(cfg, seq_len)
