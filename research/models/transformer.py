"""Decoder-only transformer LM in Flax linen: pure `init` / `apply`.

Parameter names are regular so that accounting and per-parameter multipliers (muP) can be
assigned by path: `embed/embedding`, `pos_embed/embedding`, `block_{i}/{attn,mlp}/{name}/kernel`,
`block_{i}/{ln_attn,ln_mlp}/scale`, `ln_final/scale`, `unembed/kernel`.
Shape suffixes: B batch, L sequence, D d_model, H heads, K d_head, F d_ff, V vocab.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp


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

  @property
  def d_head(self) -> int:
    return self.d_model // self.n_heads

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)


def _norm(cfg: TransformerConfig, name: str) -> nn.Module:
  if cfg.norm == "rmsnorm":
    return nn.RMSNorm(epsilon=1e-6, dtype=cfg.compute_dtype, name=name)
  return nn.LayerNorm(epsilon=1e-6, dtype=cfg.compute_dtype, name=name)


def _dense(features, cfg: TransformerConfig, name: str, fan_in: int) -> nn.Dense:
  return nn.Dense(features, use_bias=False, dtype=cfg.compute_dtype, name=name,
                  kernel_init=nn.initializers.normal(stddev=fan_in ** -0.5))


def rotary(x_BxLxHxK: jax.Array, base: float) -> jax.Array:
  """Rotary position embedding (Su et al. 2021), rotating pairs (i, i + K/2)."""
  _, L, _, K = x_BxLxHxK.shape
  freq_K2 = base ** (-jnp.arange(0, K // 2, dtype=jnp.float32) * 2 / K)
  angle_LxK2 = jnp.arange(L, dtype=jnp.float32)[:, None] * freq_K2[None, :]
  sin, cos = jnp.sin(angle_LxK2)[None, :, None, :], jnp.cos(angle_LxK2)[None, :, None, :]
  x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


class Attention(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    B, L, D = x_BxLxD.shape
    H, K = cfg.n_heads, cfg.d_head
    qkv_BxLx3HK = _dense(3 * H * K, cfg, "qkv", D)(x_BxLxD)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = jnp.split(qkv_BxLx3HK.reshape(B, L, 3 * H, K), 3, axis=2)
    if cfg.positions == "rotary":
      q_BxLxHxK, k_BxLxHxK = rotary(q_BxLxHxK, cfg.rope_base), rotary(k_BxLxHxK, cfg.rope_base)
    logits_BxHxLxL = jnp.einsum("bqhk,bshk->bhqs", q_BxLxHxK, k_BxLxHxK).astype(jnp.float32)
    logits_BxHxLxL = logits_BxHxLxL * K ** -0.5
    causal_LxL = jnp.tril(jnp.ones((L, L), dtype=bool))
    logits_BxHxLxL = jnp.where(causal_LxL, logits_BxHxLxL, jnp.finfo(jnp.float32).min)
    probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1).astype(cfg.compute_dtype)
    out_BxLxHxK = jnp.einsum("bhqs,bshk->bqhk", probs_BxHxLxL, v_BxLxHxK)
    return _dense(D, cfg, "out", H * K)(out_BxLxHxK.reshape(B, L, H * K))


class Mlp(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    h_BxLxF = nn.gelu(_dense(cfg.d_ff, cfg, "up", cfg.d_model)(x_BxLxD))
    return _dense(cfg.d_model, cfg, "down", cfg.d_ff)(h_BxLxF)


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
      logits_BxLxV = embed.attend(x_BxLxD) * cfg.d_model ** -0.5
    else:
      logits_BxLxV = _dense(cfg.vocab_size, cfg, "unembed", cfg.d_model)(x_BxLxD)
    return logits_BxLxV.astype(jnp.float32)


def init_params(cfg: TransformerConfig, rng: jax.Array):
  """Parameters (float32) for `cfg`; pure."""
  tokens_BxL = jnp.zeros((1, cfg.context), jnp.int32)
  return Transformer(cfg).init(rng, tokens_BxL)["params"]


def apply(cfg: TransformerConfig, params, tokens_BxL) -> jax.Array:
  return Transformer(cfg).apply({"params": params}, tokens_BxL)
