"""A small digit classifier whose hidden layer is the feature space of FD_digits.

Inception features make no sense for 8x8 or 28x28 digits, so small-image studies report the
Frechet distance in this network's 64-d penultimate layer instead, named FD_digits (never FID):
its values compare only with other FD_digits values from the same committed weights.

Every image is reduced to 8x8 grey in [0, 1] (the mean of its channels; an antialiased bilinear
resize), then an MLP 64 -> 256 -> 64 -> 10 classifies it. It is trained by `train` with a fixed
seed on scikit-learn's 8x8 digits plus MNIST reduced to 8x8, in a few seconds on a CPU;
`python -m launch weights train-digits` retrains it, writes `weights/digits_mlp.npz` and records
the test accuracies it measured in `weights/digits_mlp.json`.
"""

import functools
import io
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.data import images as image_data
from research.errors import UserError
from research.fileio import atomic_write_bytes, read_npz

SIZE = 8
FEATURE_DIM = 64
WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "digits_mlp.npz")
DEFAULT_MNIST = os.path.join("..", "shared", "data", "images", "mnist")  # from the repo root


@functools.lru_cache(maxsize=16)
def _resize_matrix(n: int) -> np.ndarray:
  """(8, n): jax.image.resize's antialiased linear map, which is separable, as a matrix."""
  with jax.ensure_compile_time_eval():
    return np.asarray(jax.image.resize(jnp.eye(n), (SIZE, n), "linear", antialias=True))


def to_8x8(x_BxHxWxC) -> jax.Array:
  """Grey 8x8 in [0, 1] (antialiased linear resize), flattened to (B, 64)."""
  x = jnp.mean(jnp.asarray(x_BxHxWxC, jnp.float32), axis=-1)
  _, h, w = x.shape
  if (h, w) != (SIZE, SIZE):
    x = jnp.einsum("ih,bhw,jw->bij", _resize_matrix(h), x, _resize_matrix(w),
                   precision=jax.lax.Precision.HIGHEST)
  return x.reshape(x.shape[0], SIZE * SIZE)


class DigitsMLP(nn.Module):
  """(B, 64) -> features (B, 64) and logits (B, 10)."""

  @nn.compact
  def __call__(self, x_Bx64):
    h = nn.relu(nn.Dense(256, name="hidden")(x_Bx64 * 2 - 1))
    features = nn.relu(nn.Dense(FEATURE_DIM, name="features")(h))
    return features, nn.Dense(10, name="logits")(features)


def training_data(mnist_dir: str, seed: int, n_mnist: int = 20000):
  """(train x, train y, {name: (test x, test y)}): sklearn digits split 2:1, MNIST reduced."""
  x, y = image_data.load_sklearn_digits()
  order = np.random.default_rng(seed).permutation(len(x))
  cut = len(x) * 2 // 3
  digits_x = np.asarray(to_8x8(x[..., None]))
  train_x, train_y = [digits_x[order[:cut]]], [y[order[:cut]]]
  tests = {"sklearn_digits": (digits_x[order[cut:]], y[order[cut:]])}
  for split in ("train", "test"):
    mx, my = image_data.load_mnist(mnist_dir, split)
    mx = np.asarray(to_8x8(mx[:n_mnist, ..., None] / 255.0))
    if split == "train":
      train_x.append(mx)
      train_y.append(my[:n_mnist])
    else:
      tests["mnist"] = (mx, my[:n_mnist])
  return np.concatenate(train_x), np.concatenate(train_y), tests


def train(mnist_dir: str = DEFAULT_MNIST, seed: int = 0, epochs: int = 12,
          batch_size: int = 256, learning_rate: float = 3e-3, n_mnist: int = 20000):
  """Train with a fixed seed; returns (params, {test set: accuracy}, info)."""
  train_x, train_y, tests = training_data(mnist_dir, seed, n_mnist)
  model = DigitsMLP()
  params = model.init(jax.random.key(seed), jnp.zeros((1, SIZE * SIZE)))["params"]
  optimizer = optax.adam(learning_rate)

  @jax.jit
  def epoch(params, opt_state, order, train_x, train_y):
    def step(carry, idx):
      params, opt_state = carry

      def loss_fn(p):
        _, logits = model.apply({"params": p}, train_x[idx])
        return optax.softmax_cross_entropy_with_integer_labels(logits, train_y[idx]).mean()

      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = optimizer.update(grads, opt_state)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
    return params, opt_state, losses.mean()

  opt_state = optimizer.init(params)
  rng = np.random.default_rng(seed)
  steps = len(train_x) // batch_size
  for _ in range(epochs):
    order = rng.permutation(len(train_x))[:steps * batch_size].reshape(steps, batch_size)
    params, opt_state, loss = epoch(params, opt_state, order, train_x, train_y)
  accuracy = {name: float(np.mean(np.argmax(model.apply({"params": params}, x)[1], -1) == y))
              for name, (x, y) in tests.items()}
  info = dict(seed=seed, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
              n_train=len(train_x),
              final_train_loss=float(loss), n_test={k: len(v[1]) for k, v in tests.items()})
  return params, accuracy, info


def save_params(path: str, params) -> None:
  flat = {"/".join(k.key for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  buffer = io.BytesIO()
  np.savez(buffer, **flat)
  atomic_write_bytes(path, buffer.getvalue())


def load_params(path: str = WEIGHTS) -> dict:
  if not os.path.isfile(path):
    raise UserError(f"digits extractor weights {path!r} do not exist; regenerate them with "
                    "python -m launch weights train-digits")
  params: dict = {}
  for name, value in read_npz(path, "digits extractor weights").items():
    if name.count("/") != 1:
      raise UserError(f"digits extractor weights {path!r}: array {name!r} is not named "
                      "layer/leaf; regenerate them with python -m launch weights train-digits")
    layer, leaf = name.split("/")
    params.setdefault(layer, {})[leaf] = jnp.asarray(value)
  return params


class DigitsFeatures:
  """A jitted feature function: images (B, H, W, C) in [0, 1] -> float32 (B, 64) numpy."""
  name = "digits"
  dim = FEATURE_DIM

  def __init__(self, params=None):
    self.params = load_params() if params is None else params
    model = DigitsMLP()
    self._apply = jax.jit(lambda p, x: model.apply({"params": p}, to_8x8(x))[0])

  def __call__(self, images_BxHxWxC) -> np.ndarray:
    return np.asarray(self._apply(self.params, jnp.asarray(images_BxHxWxC, jnp.float32)))
