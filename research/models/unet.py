"""The DDPM U-Net (Ho et al. 2020, their Appendix B and `diffusion_tf/models/unet.py`) in Flax
linen: pure `init_params` / `apply`.

Structure, for `ch_mult` of length n (n - 1 downsamplings, so the image size must be divisible by
2^(n - 1)):

    conv_in (3x3, channels -> ch)
    down_{i}  i < n: num_res_blocks residual blocks of ch * ch_mult[i] channels (self-attention
              after each at the resolutions in attn_resolutions), then a stride-2 3x3 conv
              (`down_{i}_downsample`) except at the last level
    mid       residual block, self-attention, residual block
    up_{i}    i from n - 1 down to 0: num_res_blocks + 1 residual blocks, each fed the
              concatenation of the running activation and one skip from the way down (attention
              as on the way down), then nearest-neighbour 2x upsampling and a 3x3 conv
              (`up_{i}_upsample`) except at level 0
    norm_out (GroupNorm), swish, conv_out (3x3, -> channels)

A residual block: GroupNorm, swish, 3x3 conv; plus a Dense projection of the (swished) time
embedding; GroupNorm, swish, dropout, 3x3 conv (zero-initialised); a 1x1 projection of the skip
when the channel count changes. Self-attention: GroupNorm, single-head q, k, v (1x1, i.e. Dense
over channels) over all H x W positions, a zero-initialised output projection, residual. The
time embedding: sinusoidal of the integer timestep (ch dimensions, as the Transformer's), Dense
ch -> 4 ch, swish, Dense 4 ch -> 4 ch.

Parameter names: `conv_in`, `temb_0`, `temb_1`, `down_{i}_block_{j}/{norm_0,conv_0,temb,norm_1,
conv_1,skip}`, `down_{i}_attn_{j}/{norm,q,k,v,out}`, `down_{i}_downsample`, `mid_block_{0,1}`,
`mid_attn`, `up_{i}_block_{j}`, `up_{i}_attn_{j}`, `up_{i}_upsample`, `norm_out`, `conv_out`.
Shape suffixes: B batch, H height, W width, C channels, T time-embedding width, P = H x W
positions.

Size accounting (in research.accounting's terms): `param_counts` (every parameter is
"non-embedding": a U-Net has no embedding table) and `train_flops_per_image` under the "full"
convention: 3 x the forward's multiply-adds x 2 (every convolution, every Dense, the attention's
P x P score and value products); a convolution's taps on its zero padding are not counted (as in
XLA's count: it matters at 8x8, where a 3x3 conv's border taps are 16% of all), nor are norms,
activations and the optimizer. Both are
walked from one list of layers (`layers`), checked against the parameter tree exactly and
against XLA's cost analysis (tests/test_unet.py).
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from research import accounting
from research.errors import require

FAMILY = "unet"
FLOP_CONVENTIONS = ("full",)  # "6N" and "kaplan" count a transformer's per-token matmuls


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  image_size: int = 32
  channels: int = 3               # image channels in and out (epsilon has the image's shape)
  ch: int = 128                   # base width
  ch_mult: tuple = (1, 2, 2, 2)   # width multiplier per resolution level
  num_res_blocks: int = 2
  attn_resolutions: tuple = (16,)  # image sizes (side in pixels) with self-attention
  dropout: float = 0.1
  groups: int = 32                # GroupNorm groups; must divide ch
  dtype: str = "float32"          # compute dtype; parameters stay float32

  @property
  def levels(self) -> int:
    return len(self.ch_mult)


def validate(cfg: UNetConfig, prefix: str = "model") -> None:
  """Every check on a U-Net config (ConfigError naming `prefix`.field)."""
  for field in ("image_size", "channels", "ch", "num_res_blocks", "groups"):
    value = getattr(cfg, field)
    require(isinstance(value, int) and value >= 1, f"{prefix}.{field}", value,
            "must be a positive integer")
  require(len(cfg.ch_mult) >= 1 and all(isinstance(m, int) and m >= 1 for m in cfg.ch_mult),
          f"{prefix}.ch_mult", cfg.ch_mult, "must be a non-empty list of positive integers")
  factor = 2 ** (cfg.levels - 1)
  require(cfg.image_size % factor == 0, f"{prefix}.image_size", cfg.image_size,
          f"the U-Net downsamples {cfg.levels - 1} time(s) (len(model.ch_mult) - 1), so the image "
          f"size must be divisible by {factor}")
  require(cfg.ch % cfg.groups == 0, f"{prefix}.groups", cfg.groups,
          f"GroupNorm's groups must divide model.ch = {cfg.ch}")
  sizes = [cfg.image_size // 2 ** i for i in range(cfg.levels)]
  bad = [r for r in cfg.attn_resolutions if r not in sizes]
  require(not bad, f"{prefix}.attn_resolutions", cfg.attn_resolutions,
          f"every entry must be one of the U-Net's resolutions {sizes} (not {bad})")
  require(0.0 <= cfg.dropout < 1.0, f"{prefix}.dropout", cfg.dropout, "must be in [0, 1)")
  require(cfg.dtype in ("float32", "bfloat16"), f"{prefix}.dtype", cfg.dtype,
          "allowed: float32, bfloat16")


def timestep_embedding(t_B, dim: int) -> jax.Array:
  """Sinusoidal embedding of integer timesteps (Ho et al.'s `get_timestep_embedding`): (B, dim)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
  args = t_B.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def _conv(features: int, name: str, dtype, stride: int = 1, kernel: int = 3, zero: bool = False):
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME", dtype=dtype,
                 name=name, kernel_init=nn.initializers.zeros if zero else
                 nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"))


class ResBlock(nn.Module):
  out_ch: int
  groups: int
  dropout: float
  dtype: object

  @nn.compact
  def __call__(self, x_BxHxWxC, temb_BxT, train: bool):
    h = nn.swish(nn.GroupNorm(self.groups, dtype=self.dtype, name="norm_0")(x_BxHxWxC))
    h = _conv(self.out_ch, "conv_0", self.dtype)(h)
    h = h + nn.Dense(self.out_ch, dtype=self.dtype, name="temb")(nn.swish(temb_BxT))[:, None, None]
    h = nn.swish(nn.GroupNorm(self.groups, dtype=self.dtype, name="norm_1")(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = _conv(self.out_ch, "conv_1", self.dtype, zero=True)(h)
    skip = x_BxHxWxC
    if x_BxHxWxC.shape[-1] != self.out_ch:
      skip = nn.Dense(self.out_ch, dtype=self.dtype, name="skip")(x_BxHxWxC)
    return skip + h


class AttnBlock(nn.Module):
  groups: int
  dtype: object

  @nn.compact
  def __call__(self, x_BxHxWxC):
    B, H, W, C = x_BxHxWxC.shape
    h = nn.GroupNorm(self.groups, dtype=self.dtype, name="norm")(x_BxHxWxC).reshape(B, H * W, C)
    q_BxPxC, k_BxPxC, v_BxPxC = (nn.Dense(C, dtype=self.dtype, name=n)(h) for n in "qkv")
    logits_BxPxP = jnp.einsum("bpc,bqc->bpq", q_BxPxC, k_BxPxC).astype(jnp.float32) / math.sqrt(C)
    probs_BxPxP = jax.nn.softmax(logits_BxPxP, axis=-1).astype(v_BxPxC.dtype)
    out_BxPxC = jnp.einsum("bpq,bqc->bpc", probs_BxPxP, v_BxPxC)
    out_BxPxC = nn.Dense(C, dtype=self.dtype, name="out", kernel_init=nn.initializers.zeros)(
        out_BxPxC)
    return x_BxHxWxC + out_BxPxC.reshape(B, H, W, C)


class UNet(nn.Module):
  cfg: UNetConfig

  @nn.compact
  def __call__(self, x_BxHxWxC, t_B, train: bool = False):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    block = lambda out_ch, name: ResBlock(out_ch, cfg.groups, cfg.dropout, dtype,  # noqa: E731
                                          name=name)
    attn = lambda name: AttnBlock(cfg.groups, dtype, name=name)  # noqa: E731
    temb_BxT = timestep_embedding(t_B, cfg.ch)
    temb_BxT = nn.Dense(4 * cfg.ch, dtype=dtype, name="temb_0")(temb_BxT)
    temb_BxT = nn.Dense(4 * cfg.ch, dtype=dtype, name="temb_1")(nn.swish(temb_BxT))
    h = _conv(cfg.ch, "conv_in", dtype)(x_BxHxWxC.astype(dtype))
    skips = [h]
    for i, mult in enumerate(cfg.ch_mult):
      for j in range(cfg.num_res_blocks):
        h = block(cfg.ch * mult, f"down_{i}_block_{j}")(h, temb_BxT, train)
        if h.shape[1] in cfg.attn_resolutions:
          h = attn(f"down_{i}_attn_{j}")(h)
        skips.append(h)
      if i != cfg.levels - 1:
        h = _conv(h.shape[-1], f"down_{i}_downsample", dtype, stride=2)(h)
        skips.append(h)
    h = block(h.shape[-1], "mid_block_0")(h, temb_BxT, train)
    h = attn("mid_attn")(h)
    h = block(h.shape[-1], "mid_block_1")(h, temb_BxT, train)
    for i in reversed(range(cfg.levels)):
      for j in range(cfg.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(cfg.ch * cfg.ch_mult[i], f"up_{i}_block_{j}")(h, temb_BxT, train)
        if h.shape[1] in cfg.attn_resolutions:
          h = attn(f"up_{i}_attn_{j}")(h)
      if i != 0:
        B, H, W, C = h.shape
        h = jnp.broadcast_to(h[:, :, None, :, None], (B, H, 2, W, 2, C)).reshape(
            B, 2 * H, 2 * W, C)
        h = _conv(C, f"up_{i}_upsample", dtype)(h)
    assert not skips
    h = nn.swish(nn.GroupNorm(cfg.groups, dtype=dtype, name="norm_out")(h))
    return _conv(cfg.channels, "conv_out", dtype, zero=True)(h).astype(jnp.float32)


def init_params(cfg: UNetConfig, rng: jax.Array):
  x = jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.channels), jnp.float32)
  return UNet(cfg).init(rng, x, jnp.zeros((1,), jnp.int32))["params"]


def apply(cfg: UNetConfig, params, x_BxHxWxC, t_B, *, train: bool = False,
          rng: jax.Array | None = None) -> jax.Array:
  """epsilon_theta(x_t, t): (B, H, W, C) float32. `rng` drives dropout when `train`."""
  rngs = {"dropout": rng} if train and rng is not None else {}
  return UNet(cfg).apply({"params": params}, x_BxHxWxC, t_B, train=train, rngs=rngs)


# Size accounting: one walk over the layers feeds the parameter count and the FLOP count.

@dataclasses.dataclass(frozen=True)
class Layer:
  kind: str        # "conv", "dense", "norm", "attn"
  c_in: int
  c_out: int
  kernel: int = 1  # conv kernel side
  positions: int = 1  # output positions per image (1 for the time embedding's Dense layers)
  taps: int = 0    # conv: kernel taps that meet a real input pixel, summed over output positions


def conv_taps(side_in: int, stride: int, kernel: int = 3) -> int:
  """Taps of a SAME-padded square conv that fall on the input, summed over output positions
  (padding is not multiplied: XLA's cost analysis counts a convolution's FLOPs this way)."""
  side_out = -(-side_in // stride)
  pad = max((side_out - 1) * stride + kernel - side_in, 0)
  lo = pad // 2
  per_dim = sum(sum(0 <= o * stride - lo + k < side_in for k in range(kernel))
                for o in range(side_out))
  return per_dim ** 2


def _conv_layer(c_in: int, c_out: int, side_in: int, stride: int = 1) -> Layer:
  side_out = side_in // stride
  return Layer("conv", c_in, c_out, 3, side_out * side_out, conv_taps(side_in, stride))


def layers(cfg: UNetConfig) -> list[Layer]:
  """Every parameterised layer (and each attention's score / value products, kind "attn")."""
  out: list[Layer] = []
  T, S = 4 * cfg.ch, cfg.image_size

  def res(c_in, c_out, side):
    p = side * side
    out.extend([Layer("norm", c_in, c_in), _conv_layer(c_in, c_out, side),
                Layer("dense", T, c_out), Layer("norm", c_out, c_out),
                _conv_layer(c_out, c_out, side)])
    if c_in != c_out:
      out.append(Layer("dense", c_in, c_out, 1, p))

  def attn(c, side):
    p = side * side
    out.extend([Layer("norm", c, c)] + [Layer("dense", c, c, 1, p)] * 4 + [Layer("attn", c, c, 1, p)])

  out.extend([Layer("dense", cfg.ch, T), Layer("dense", T, T), _conv_layer(cfg.channels, cfg.ch, S)])
  skips, c, side = [cfg.ch], cfg.ch, S
  for i, mult in enumerate(cfg.ch_mult):
    for _ in range(cfg.num_res_blocks):
      res(c, cfg.ch * mult, side)
      c = cfg.ch * mult
      if side in cfg.attn_resolutions:
        attn(c, side)
      skips.append(c)
    if i != cfg.levels - 1:
      out.append(_conv_layer(c, c, side, stride=2))
      side //= 2
      skips.append(c)
  res(c, c, side)
  attn(c, side)
  res(c, c, side)
  for i in reversed(range(cfg.levels)):
    for _ in range(cfg.num_res_blocks + 1):
      res(c + skips.pop(), cfg.ch * cfg.ch_mult[i], side)
      c = cfg.ch * cfg.ch_mult[i]
      if side in cfg.attn_resolutions:
        attn(c, side)
    if i != 0:
      side *= 2
      out.append(_conv_layer(c, c, side))
  out.extend([Layer("norm", c, c), _conv_layer(c, cfg.channels, S)])
  return out


def _params(layer: Layer) -> int:
  if layer.kind == "conv":
    return layer.kernel ** 2 * layer.c_in * layer.c_out + layer.c_out
  if layer.kind == "dense":
    return layer.c_in * layer.c_out + layer.c_out
  if layer.kind == "norm":
    return 2 * layer.c_in
  return 0


def _forward_flops(layer: Layer) -> int:
  if layer.kind == "conv":
    return 2 * layer.c_in * layer.c_out * layer.taps
  if layer.kind == "dense":
    return 2 * layer.c_in * layer.c_out * layer.positions
  if layer.kind == "attn":  # q k^T and probs v: P x P x C multiply-adds each
    return 2 * 2 * layer.positions ** 2 * layer.c_in
  return 0


def param_counts(cfg: UNetConfig) -> accounting.ParamCounts:
  """Total parameters; a U-Net has no embedding table, so all are non-embedding."""
  total = sum(_params(layer) for layer in layers(cfg))
  return accounting.ParamCounts(total, 0, total)


def forward_flops_per_image(cfg: UNetConfig) -> int:
  return sum(_forward_flops(layer) for layer in layers(cfg))


def train_flops_per_image(cfg: UNetConfig, convention: str = "full") -> int:
  """Training FLOPs per image: 3 x the forward (forward, and the backward's two products)."""
  require(convention in FLOP_CONVENTIONS, "tracking.flop_convention", convention,
          f"a U-Net's FLOPs are counted under {', '.join(FLOP_CONVENTIONS)} only (6N assumes a "
          "transformer's one use of each weight per token)")
  return 3 * forward_flops_per_image(cfg)


def activation_bytes(cfg: UNetConfig, rows: int) -> float:
  """A rough count of what a training step keeps for the backward of `rows` images: about six
  activations per residual block layer output (norms, swish, conv outputs) plus each
  attention's P x P probabilities, in the compute dtype (float32 softmax)."""
  b = jnp.dtype(cfg.dtype).itemsize
  total = 0.0
  for layer in layers(cfg):
    if layer.kind == "conv":
      total += 3 * b * layer.c_out * layer.positions
    elif layer.kind == "attn":
      total += 4 * 2 * layer.positions ** 2 + 4 * b * layer.c_in * layer.positions
  return rows * total
