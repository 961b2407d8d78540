"""InceptionV3 for FID, in Flax linen: the pytorch-fid variant of the 2015-12-05 TF network.

This is the network of Seitzer's pytorch-fid (`pytorch_fid/inception.py`, `fid_inception_v3`),
which ports the TensorFlow graph the original FID code (Heusel et al. 2017) used. It differs from
torchvision's InceptionV3 (Szegedy et al. 2016) in ways that change the numbers:
  * the average pools inside the Inception blocks exclude the zero padding (TF semantics);
  * the last block (Mixed_7c, "FIDInceptionE_2") pools its pool branch with a 3x3 max-pool;
  * batch norm uses epsilon 1e-3;
  * the input is resized bilinearly to 299x299 (align_corners=False, no antialiasing) and
    scaled from [0, 1] to [-1, 1]; grey images are repeated to three channels.
The features are the 2048-d global average pool after Mixed_7c.

Parameter names follow the PyTorch state_dict (`Mixed_5b/branch1x1/conv/kernel` for
`Mixed_5b.branch1x1.conv.weight`), so `variables_from_state_dict` ports pytorch-fid's weight file
(`pt_inception-2015-12-05-6726825d.pth`, read without PyTorch by research/models/torch_weights.py)
or an `.npz` export of it. Nothing is ever downloaded.
Shape suffixes: B batch, H height, W width, C channels.
"""

import functools
import io
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.errors import UserError
from research.fileio import atomic_write_bytes
from research.models import torch_weights

INPUT_SIZE = 299
FEATURE_DIM = 2048
MIXED_BLOCKS = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) matrix of torch's bilinear interpolation with align_corners=False, no antialias."""
  scale = in_size / out_size
  src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(int), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.arange(out_size), lo), 1.0 - frac)
  np.add.at(m, (np.arange(out_size), hi), frac)
  return m


def resize_bilinear(x_BxHxWxC: jax.Array, size: int) -> jax.Array:
  """Bilinear resize to size x size, matching torch.nn.functional.interpolate(bilinear)."""
  _, h, w, _ = x_BxHxWxC.shape
  rows_SxH = jnp.asarray(bilinear_matrix(h, size), x_BxHxWxC.dtype)
  cols_SxW = jnp.asarray(bilinear_matrix(w, size), x_BxHxWxC.dtype)
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("sh,bhwc->bswc", rows_SxH, x_BxHxWxC, precision=hp)
  return jnp.einsum("tw,bswc->bstc", cols_SxW, x, precision=hp)


class BasicConv(nn.Module):
  """Conv (no bias) -> batch norm (inference statistics) -> ReLU: torchvision's BasicConv2d."""
  features: int
  kernel: tuple[int, int] = (1, 1)
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  bn_epsilon: float = 1e-3

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=((ph, ph), (pw, pw)),
                use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=self.bn_epsilon, name="bn")(x)
    return nn.relu(x)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class _Block(nn.Module):
  """Shared plumbing of the Inception blocks: a conv factory and the 3x3 stride-1 pool."""
  bn_epsilon: float = 1e-3
  pool_include_pad: bool = False

  def conv(self, name, features, kernel=(1, 1), strides=1, padding=(0, 0)):
    return BasicConv(features, kernel, strides, padding, self.bn_epsilon, name=name)

  def pool_3x3(self, x, kind: str = "avg"):
    pad = ((1, 1), (1, 1))
    if kind == "max":
      return nn.max_pool(x, (3, 3), strides=(1, 1), padding=pad)
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=pad,
                       count_include_pad=self.pool_include_pad)


class InceptionA(_Block):
  """FIDInceptionA: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""
  pool_features: int = 32

  @nn.compact
  def __call__(self, x):
    b1 = self.conv("branch1x1", 64)(x)
    b5 = self.conv("branch5x5_2", 64, (5, 5), padding=(2, 2))(self.conv("branch5x5_1", 48)(x))
    b3 = self.conv("branch3x3dbl_1", 64)(x)
    b3 = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(b3)
    b3 = self.conv("branch3x3dbl_3", 96, (3, 3), padding=(1, 1))(b3)
    bp = self.conv("branch_pool", self.pool_features)(self.pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x):
    b3 = self.conv("branch3x3", 384, (3, 3), strides=2)(x)
    bd = self.conv("branch3x3dbl_1", 64)(x)
    bd = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(bd)
    bd = self.conv("branch3x3dbl_3", 96, (3, 3), strides=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(_Block):
  """FIDInceptionC: factorised 7x7 convolutions, avgpool excluding padding."""
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
    b1 = self.conv("branch1x1", 192)(x)
    b7 = self.conv("branch7x7_1", c7)(x)
    b7 = self.conv("branch7x7_2", c7, row[0], padding=row[1])(b7)
    b7 = self.conv("branch7x7_3", 192, col[0], padding=col[1])(b7)
    bd = self.conv("branch7x7dbl_1", c7)(x)
    for i, ((kernel, pad), out) in enumerate(zip([col, row, col, row], [c7, c7, c7, 192])):
      bd = self.conv(f"branch7x7dbl_{i + 2}", out, kernel, padding=pad)(bd)
    bp = self.conv("branch_pool", 192)(self.pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x):
    b3 = self.conv("branch3x3_2", 320, (3, 3), strides=2)(self.conv("branch3x3_1", 192)(x))
    b7 = self.conv("branch7x7x3_1", 192)(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = self.conv("branch7x7x3_4", 192, (3, 3), strides=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(_Block):
  """FIDInceptionE_1 (avgpool excluding padding) or, with pool="max", FIDInceptionE_2."""
  pool: str = "avg"

  @nn.compact
  def __call__(self, x):
    def split_1x3_3x1(name, y):
      a = self.conv(f"{name}a", 384, (1, 3), padding=(0, 1))(y)
      b = self.conv(f"{name}b", 384, (3, 1), padding=(1, 0))(y)
      return jnp.concatenate([a, b], axis=-1)

    b1 = self.conv("branch1x1", 320)(x)
    b3 = split_1x3_3x1("branch3x3_2", self.conv("branch3x3_1", 384)(x))
    bd = self.conv("branch3x3dbl_1", 448)(x)
    bd = split_1x3_3x1("branch3x3dbl_3", self.conv("branch3x3dbl_2", 384, (3, 3),
                                                   padding=(1, 1))(bd))
    bp = self.conv("branch_pool", 192)(self.pool_3x3(x, self.pool))
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """FID InceptionV3: images (B, H, W, 1 or 3) in [0, 1] -> 2048-d pool features (B, 2048).

  The fields other than the two input switches exist to show that each pytorch-fid detail
  matters (tests mutate them); leave them at their defaults to compute FID.
  """
  bn_epsilon: float = 1e-3
  pool_include_pad: bool = False
  last_block_pool: str = "max"
  resize_input: bool = True
  normalize_input: bool = True

  @nn.compact
  def __call__(self, x_BxHxWxC):
    x = x_BxHxWxC.astype(jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    if self.resize_input:
      x = resize_bilinear(x, INPUT_SIZE)
    if self.normalize_input:
      x = 2 * x - 1
    conv = functools.partial(BasicConv, bn_epsilon=self.bn_epsilon)
    x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = _max_pool_3x3_s2(conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x))
    x = conv(80, name="Conv2d_3b_1x1")(x)
    x = _max_pool_3x3_s2(conv(192, (3, 3), name="Conv2d_4a_3x3")(x))
    block = dict(bn_epsilon=self.bn_epsilon, pool_include_pad=self.pool_include_pad)
    blocks = [(InceptionA, dict(pool_features=32)), (InceptionA, dict(pool_features=64)),
              (InceptionA, dict(pool_features=64)), (InceptionB, {})]
    blocks += [(InceptionC, dict(channels_7x7=c)) for c in (128, 160, 160, 192)]
    blocks += [(InceptionD, {}), (InceptionE, dict(pool="avg")),
               (InceptionE, dict(pool=self.last_block_pool))]
    for name, (cls, kwargs) in zip(MIXED_BLOCKS, blocks):
      x = cls(**kwargs, **block, name=name)(x)
      self.sow("intermediates", "mixed", x)  # a tuple, in MIXED_BLOCKS order
    return jnp.mean(x, axis=(1, 2))


# Weights: PyTorch state_dict names <-> Flax variables.

_LEAF_TO_TORCH = {("params", "kernel"): "weight", ("params", "scale"): "weight",
                  ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
                  ("batch_stats", "var"): "running_var"}
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.", "AuxLogits.")


@functools.lru_cache(maxsize=1)
def expected_shapes() -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """torch name -> (Flax variable path, torch shape) for every weight the network needs."""
  abstract = jax.eval_shape(InceptionV3(resize_input=False).init, jax.random.key(0),
                            jnp.zeros((1, 75, 75, 3)))
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    keys = tuple(k.key for k in path)
    torch_name = ".".join(keys[1:-1] + (_LEAF_TO_TORCH[(keys[0], keys[-1])],))
    shape = leaf.shape
    if len(shape) == 4:  # HWIO -> OIHW
      shape = (shape[3], shape[2], shape[0], shape[1])
    out[torch_name] = (keys, tuple(shape))
  return out


def variables_from_state_dict(state_dict: Mapping, source: str = "state_dict") -> dict:
  """Flax variables from pytorch-fid's InceptionV3 state_dict (torch tensors or numpy arrays).

  Checks every name and shape; `fc.*`, `AuxLogits.*` and `num_batches_tracked` are ignored.
  """
  arrays = {k: torch_weights.to_numpy(v) for k, v in state_dict.items()
            if not k.endswith(_IGNORED_SUFFIXES) and not k.startswith(_IGNORED_PREFIXES)}
  expected = expected_shapes()
  missing = sorted(set(expected) - set(arrays))
  unexpected = sorted(set(arrays) - set(expected))
  wrong = [f"{k} {arrays[k].shape} (expected {expected[k][1]})" for k in expected
           if k in arrays and arrays[k].shape != expected[k][1]]
  if missing or unexpected or wrong:
    details = "; ".join(part for part in [
        f"{len(missing)} missing, e.g. {missing[:3]}" if missing else "",
        f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}" if unexpected else "",
        f"wrong shapes: {wrong[:3]}" if wrong else ""] if part)
    raise UserError(f"{source} is not pytorch-fid's FID InceptionV3 ({WEIGHTS_FILE}): {details}")
  variables: dict = {}
  for name, (keys, _) in expected.items():
    value = arrays[name].astype(np.float32)
    if value.ndim == 4:  # OIHW -> HWIO
      value = value.transpose(2, 3, 1, 0)
    node = variables
    for key in keys[:-1]:
      node = node.setdefault(key, {})
    node[keys[-1]] = jnp.asarray(value)
  return variables


def _read_weights(path: str) -> dict[str, np.ndarray]:
  """pytorch-fid's weights by torch name, from its `.pth` file or an `.npz` export of it."""
  return torch_weights.read_state_dict(
      path, "Inception weight file", f"give the path of pytorch-fid's {WEIGHTS_FILE} or of an "
      ".npz export of it (nothing is downloaded)")


def export_npz(pth_path: str, npz_path: str) -> None:
  """Convert pytorch-fid's `.pth` to an `.npz` of the same names (checked): no pickle inside."""
  state = _read_weights(pth_path)
  variables_from_state_dict(state, pth_path)
  buffer = io.BytesIO()
  np.savez(buffer, **state)
  atomic_write_bytes(npz_path, buffer.getvalue())


def load_variables(path: str) -> dict:
  return variables_from_state_dict(_read_weights(path), repr(path))


class InceptionFeatures:
  """A jitted feature function: images (B, H, W, C) in [0, 1] -> float32 (B, 2048) numpy."""
  name = "inception"
  dim = FEATURE_DIM

  def __init__(self, variables: dict, model: InceptionV3 | None = None):
    self.model = model or InceptionV3()
    self.variables = variables
    self._apply = jax.jit(self.model.apply)
    self._batch = None

  def __call__(self, images_BxHxWxC) -> np.ndarray:
    """A short last batch is padded to the first batch's size: one compilation, not two."""
    x = np.asarray(images_BxHxWxC, np.float32)
    n = len(x)
    self._batch = self._batch or n
    if n < self._batch:
      x = np.concatenate([x, np.zeros((self._batch - n,) + x.shape[1:], x.dtype)])
    return np.asarray(self._apply(self.variables, jnp.asarray(x)))[:n]
