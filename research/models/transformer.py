"""Decoder-only transformer LM in Flax linen: pure `init` / `apply`.

Parameter names are regular so that accounting, per-parameter multipliers (muP) and tensor-
parallel partition rules can be assigned by path: `embed/embedding`, `pos_embed/embedding`,
`block_{i}/{attn,mlp}/{name}/kernel`, `block_{i}/{ln_attn,ln_mlp}/scale`, `ln_final/scale`,
`unembed/kernel`; rematerialisation (`remat`) keeps them.
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
`activation_bytes` counts what a training step keeps for its backward (the memory estimate
printed at the start of a run).

Accelerators (docs/accelerators.md): `attention` picks the softmax attention's implementation by
backend, `remat` what each block keeps for the backward, and `TENSOR_PARALLEL_RULES` split the
heads and the MLP's hidden units across a mesh's model axis (research/parallel.py).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research import accounting, parallel
from research.errors import require
from research.models import attention, fused

ATTENTION = ("auto", "blocked", "xla", "cudnn")
# What a block keeps for the backward: everything; only its input (the rest is recomputed one
# block at a time); its input and the outputs of its 2-D matmuls (the projections), recomputing
# the norms, GELU and the attention core, whose dots are batched over heads.
REMAT_POLICIES = {"none": None, "block": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}

# Megatron-style tensor parallelism (Shoeybi et al. 2019), as (regex on a parameter's path, the
# dimension split across the mesh's model axis): the fused qkv projection and the MLP's up
# projection are column-parallel (their outputs: whole heads, hidden units), the attention's
# output projection and the MLP's down projection row-parallel (their inputs). Each device then
# runs its own heads and hidden units, and a block needs one all-reduce after its attention and
# one after its MLP in the forward pass (and the same two in the backward).
TENSOR_PARALLEL_RULES = ((r"attn/qkv/kernel$", 1), (r"attn/out/kernel$", 0),
                         (r"mlp/up/kernel$", 1), (r"mlp/down/kernel$", 0))


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
  attention_block: int = 128     # queries per block of "blocked" (attention.py); 0: one
  attention: str = "auto"        # "auto" | "blocked" | "xla" | "cudnn": attention_implementation
  remat: str = "none"            # "none" | "block" | "dots": REMAT_POLICIES
  parametrization: str = "standard"  # "standard" | "mup" (see `lr_multiplier`)
  mup_base_d_model: int = 0      # muP's base shape; 0: this model's own (muP is then the SP)
  mup_base_d_head: int = 0
  mup_output_mult: float = 1.0   # muP's output (logit) multiplier, tuned at the base width
  mup_embed_lr: float = 1.0      # muP: the input embedding's rate, a multiple of the base rate

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


def _dense(features, cfg: TransformerConfig, name: str, fan_in: int, kernel_init=None) -> nn.Dense:
  return nn.Dense(features, use_bias=False, dtype=cfg.compute_dtype, name=name,
                  kernel_init=kernel_init or nn.initializers.normal(stddev=fan_in ** -0.5))


def _heads_major_init(H: int, K: int, stddev: float):
  """N(0, stddev^2) for the fused qkv kernel [D, H*3*K], drawn in the (3, H, K) order of its
  columns that this model had before the layout became (H, 3, K): each head's q, k and v start
  from the same values as before, so runs keep their numbers (results/ stays reproducible)."""

  def init(key, shape, dtype=jnp.float32):
    w_Dx3xHxK = jax.random.normal(key, (shape[0], 3, H, K), dtype) * stddev
    return w_Dx3xHxK.transpose(0, 2, 1, 3).reshape(shape)

  return init


def _mup_queries(q, cfg: TransformerConfig):
  """muP's attention scale on the queries (every implementation applies 1/sqrt(K) itself)."""
  if cfg.parametrization != "mup":
    return q
  return q * jnp.asarray(cfg.attention_scale * cfg.d_head ** 0.5, q.dtype)


def _dense_apply(features, cfg: TransformerConfig, name: str, fan_in: int, x_NxI,
                 kernel_init=None) -> jax.Array:
  """`_dense` applied to x[..., I] as one 2-D matmul over all N leading positions.

  On XLA CPU the backward of a dot over [B, L, I] (weight gradient contracting B and L) made
  XLA recompute and transpose the output gradient (1.85x slower MLP fwd+bwd than 2-D).
  """
  y_NxO = _dense(features, cfg, name, fan_in, kernel_init)(x_NxI.reshape(-1, x_NxI.shape[-1]))
  return y_NxO.reshape(*x_NxI.shape[:-1], features)


def rotary(x: jax.Array, base: float, seq_axis: int = -2) -> jax.Array:
  """Rotary position embedding (Su et al. 2021), rotating pairs (i, i + K/2) of x's last axis
  K; positions L on `seq_axis` (-2 for head-major [B, H, L, K], 1 for [B, L, H, K])."""
  L, K = x.shape[seq_axis], x.shape[-1]
  # Tables as numpy constants: computed with jnp, XLA CPU fuses sin/cos into every element's loop.
  freq_K2 = base ** (-np.arange(0, K // 2, dtype=np.float32) * 2 / K)
  angle_LxK2 = np.arange(L, dtype=np.float32)[:, None] * freq_K2[None, :]
  table_shape = [1] * x.ndim  # [L, K/2] placed on x's axes
  table_shape[seq_axis], table_shape[-1] = L, K // 2
  sin_LxK2 = np.sin(angle_LxK2).reshape(table_shape)
  cos_LxK2 = np.cos(angle_LxK2).reshape(table_shape)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos_LxK2 - x2 * sin_LxK2, x2 * cos_LxK2 + x1 * sin_LxK2], axis=-1)
  return out.astype(x.dtype)


def _attention_chunks(L: int, block: int) -> int:
  """Query blocks for sequence length L: L / block when block divides L, else one block."""
  return L // block if block and L % block == 0 else 1


# What "auto" runs where it picks our blocked attention (every CPU): 32-query blocks whatever
# `attention_block` says, and the products over the head size as element-wise multiply-adds for
# heads up to 8 wide (attention.causal_attention). Measured on the model ladder's shapes, one
# core, against "blocked" with 128-query blocks (benchmarks/ladder_speed.py, benchmarks/README.md).
AUTO_BLOCK = 32
AUTO_ELEMENTWISE_MAX_HEAD = 8


def blocked_plan(cfg: TransformerConfig, L: int) -> tuple[int, bool]:
  """(query blocks, element-wise scores) of our blocked attention at sequence length L: under
  "auto" the measured settings above, under "blocked" `attention_block` with batched dots."""
  if cfg.attention == "auto":
    return _attention_chunks(L, AUTO_BLOCK), cfg.d_head <= AUTO_ELEMENTWISE_MAX_HEAD
  return _attention_chunks(L, cfg.attention_block), False


def cudnn_problem(cfg: TransformerConfig) -> str | None:
  """Why cuDNN's fused attention cannot run this model, or None. It takes bfloat16 (or float16)
  and head sizes that are multiples of 8 up to 128 (256 from Hopper on; we ask 128)."""
  if cfg.dtype != "bfloat16":
    return f"it needs model.dtype = bfloat16, not {cfg.dtype}"
  if cfg.d_head % 8 or cfg.d_head > 128:
    return (f"it needs a head size d_model / n_heads that is a multiple of 8 up to 128, not "
            f"{cfg.d_head}")
  return None


def attention_implementation(cfg: TransformerConfig, backend: str | None = None) -> str:
  """The implementation `cfg.attention` stands for on `backend` (JAX's default backend if None):
  "auto" is cuDNN's fused kernel on a GPU where it can run the model (no [B, H, L, L]
  probabilities kept for the backward), and our blocked attention everywhere else (on CPUs the
  fastest we measured, benchmarks/README.md). "cudnn" off a GPU is a config error."""
  backend = backend or jax.default_backend()
  if cfg.attention == "auto":
    return "cudnn" if backend == "gpu" and cudnn_problem(cfg) is None else "blocked"
  require(cfg.attention != "cudnn" or backend == "gpu", "model.attention", cfg.attention,
          f"cuDNN attention needs a GPU and JAX's backend here is {backend}: use auto, blocked "
          "or xla")
  return cfg.attention


class Attention(nn.Module):
  """Causal self-attention. The fused projection's output is laid out (H, 3, K), each head's q, k
  and v side by side, so that a tensor-parallel split of it over the model axis gives every
  device whole heads (TENSOR_PARALLEL_RULES). Our blocked attention (`attention.causal_attention`,
  own backward) runs head-major, [B, H, L, K], where its matmuls are plain batched matmuls over
  B*H, with one transpose of q, k, v in and one of the output out; jax.nn.dot_product_attention
  (implementations "xla" and "cudnn") takes [B, L, H, K] as the projection gives it."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    B, L, D = x_BxLxD.shape
    H, K = cfg.n_heads, cfg.d_head
    qkv_BxLxHx3xK = _dense_apply(3 * H * K, cfg, "qkv", D, x_BxLxD,
                                 kernel_init=_heads_major_init(H, K, D ** -0.5)
                                 ).reshape(B, L, H, 3, K)
    implementation = attention_implementation(cfg)
    if implementation == "blocked":
      qkv_3xBxHxLxK = parallel.constrain(qkv_BxLxHx3xK.transpose(3, 0, 2, 1, 4),
                                         None, "batch", "model", None, None)
      q_BxHxLxK, k_BxHxLxK, v_BxHxLxK = qkv_3xBxHxLxK[0], qkv_3xBxHxLxK[1], qkv_3xBxHxLxK[2]
      if cfg.positions == "rotary":
        q_BxHxLxK, k_BxHxLxK = rotary(q_BxHxLxK, cfg.rope_base), rotary(k_BxHxLxK, cfg.rope_base)
      q_BxHxLxK = _mup_queries(q_BxHxLxK, cfg)
      out_BxHxLxK = attention.causal_attention(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK,
                                               *blocked_plan(cfg, L))
      out_BxLxHxK = out_BxHxLxK.transpose(0, 2, 1, 3)
    else:
      qkv_BxLxHx3xK = parallel.constrain(qkv_BxLxHx3xK, "batch", None, "model", None, None)
      q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (qkv_BxLxHx3xK[:, :, :, i] for i in range(3))
      if cfg.positions == "rotary":
        q_BxLxHxK = rotary(q_BxLxHxK, cfg.rope_base, seq_axis=1)
        k_BxLxHxK = rotary(k_BxLxHxK, cfg.rope_base, seq_axis=1)
      q_BxLxHxK = _mup_queries(q_BxLxHxK, cfg)
      out_BxLxHxK = jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, is_causal=True,
                                                 implementation=implementation)
    return _dense_apply(D, cfg, "out", H * K, out_BxLxHxK.reshape(B, L, H * K))


class Mlp(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    h_BxLxF = fused.gelu(_dense_apply(cfg.d_ff, cfg, "up", cfg.d_model, x_BxLxD))
    h_BxLxF = parallel.constrain(h_BxLxF, "batch", None, "model")
    return _dense_apply(cfg.d_model, cfg, "down", cfg.d_ff, h_BxLxF)


class Block(nn.Module):
  """Pre-norm residual block. Under tensor parallelism its input and output (the residual
  stream) are whole on every device of the model axis, split over the batch only."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    x_BxLxD = parallel.constrain(x_BxLxD, "batch", None, None)
    x_BxLxD = x_BxLxD + Attention(self.cfg, name="attn")(_norm(self.cfg, "ln_attn")(x_BxLxD))
    x_BxLxD = parallel.constrain(x_BxLxD, "batch", None, None)
    return x_BxLxD + Mlp(self.cfg, name="mlp")(_norm(self.cfg, "ln_mlp")(x_BxLxD))


def _block_class(cfg: TransformerConfig):
  """Block, or Block rematerialised by cfg.remat's policy; either way its parameters keep the
  paths `block_{i}/...` (nn.remat wraps the class, not the scope)."""
  if cfg.remat == "none":
    return Block
  return nn.remat(Block, policy=REMAT_POLICIES[cfg.remat])


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
    block = _block_class(cfg)
    for i in range(cfg.n_layers):
      x_BxLxD = block(cfg, name=f"block_{i}")(x_BxLxD)
    x_BxLxD = _norm(cfg, "ln_final")(x_BxLxD)
    if cfg.tied_embeddings:
      B, L, D = x_BxLxD.shape
      logits_NxV = embed.attend(x_BxLxD.reshape(B * L, D)) * output_multiplier(cfg)
      logits_BxLxV = logits_NxV.reshape(B, L, cfg.vocab_size)
    else:
      if cfg.parametrization == "mup":  # muP's output multiplier / width_mult on the logits,
        # applied to the D-wide input: V / D times fewer products
        x_BxLxD = x_BxLxD * (cfg.mup_output_mult / cfg.width_mult)
      logits_BxLxV = _dense_apply(cfg.vocab_size, cfg, "unembed", cfg.d_model, x_BxLxD)
    return logits_BxLxV.astype(jnp.float32)


def output_multiplier(cfg: TransformerConfig) -> float:
  """The tied readout's factor on x.E: 1/sqrt(d_model) (standard); under muP 1/sqrt(base
  d_model) / width_mult, so that logits stay O(1) as the width grows (Yang et al. 2022, Table 8:
  the output multiplier 1/width_mult, as mup's MuSharedReadout)."""
  if cfg.parametrization != "mup":
    return cfg.d_model ** -0.5
  return cfg.mup_output_mult * (cfg.mup_base_d_model or cfg.d_model) ** -0.5 / cfg.width_mult


HIDDEN_KERNELS = ("attn/qkv/kernel", "attn/out/kernel", "mlp/up/kernel", "mlp/down/kernel")


def lr_multiplier(cfg: TransformerConfig):
  """path -> the parameter's learning-rate multiplier: muP's Adam rule (Yang et al. 2022,
  Table 8) scales the hidden matrices' rate by 1 / width_mult, and keeps the embedding (input
  and tied readout, whose logits carry the output multiplier instead), the untied unembedding
  and the norm scales at the base rate. Hidden fan-ins (d_model, n_heads d_head, d_ff) are taken
  to grow together with d_model, as on the model ladder. 1 everywhere under the standard
  parametrization. Under muP, `mup_embed_lr` scales the input embedding's rate (1: the base
  rate). Paths are '/'-joined parameter names, e.g. 'block_0/mlp/up/kernel'."""
  hidden = 1.0 / cfg.width_mult
  embed = cfg.mup_embed_lr if cfg.parametrization == "mup" else 1.0

  def multiplier(path: str) -> float:
    if path.endswith(HIDDEN_KERNELS):
      return hidden
    return embed if path.startswith("embed/") else 1.0

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


def activation_bytes(cfg: TransformerConfig, rows: int, seq_len: int, model_parallel: int = 1,
                     implementation: str = "blocked") -> float:
  """Bytes one device keeps for the backward of `rows` sequences of `seq_len` tokens (its share
  of one microbatch): an analytic count of what autodiff saves (as jax's `saved_residuals`
  lists it), before XLA's own buffers and workspace.

  Per layer and token, in the compute dtype: three D-vectors for each of the two norms (input,
  normalised, output), q, k and v (3 HK), the attention's output (HK) and the MLP's hidden
  layer before and after GELU (2 F). The attention's own state: the blocked attention keeps its
  float32 output and unnormalised probabilities, (n + 1) / 2n of L keys per query and head with
  n query blocks; XLA's keeps the whole L x L float32 logits, exponentials and probabilities
  and a boolean mask (13 bytes per query, key and head); cuDNN's only its output and a float32
  log-sum-exp per query and head. Heads and hidden units are divided over the model axis
  (`model_parallel`). With remat "block" a layer keeps only its input, with "dots" its input and
  the outputs of the qkv, out and up projections, and the block being recomputed in the
  backward holds a whole layer's set on top. Plus the final norm and the float32 softmax over
  the vocabulary (V per token).
  """
  b = jnp.dtype(cfg.dtype).itemsize
  D, L, V = cfg.d_model, seq_len, cfg.vocab_size
  H, HK, F = (x / model_parallel for x in (cfg.n_heads, cfg.n_heads * cfg.d_head, cfg.d_ff))
  n = blocked_plan(cfg, L)[0]
  attention_state = {"blocked": 4 * (HK + H * L * (n + 1) / (2 * n) + H),
                     "xla": 13 * H * L,
                     "cudnn": b * HK + 4 * H}[implementation]
  full_layer = b * (6 * D + 4 * HK + 2 * F) + attention_state
  kept_layer = {"none": full_layer, "block": b * D, "dots": b * (2 * D + 3 * HK + F)}[cfg.remat]
  recomputed = 0.0 if cfg.remat == "none" else full_layer
  head = 3 * b * D + 4 * V
  return float(rows * L * (cfg.n_layers * kept_layer + recomputed + head))


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
