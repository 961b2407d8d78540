"""The FD_digits extractor (research/models/digits.py) and the image readers it uses."""

import json

import jax
import numpy as np
import pytest
from scipy import ndimage

from research.data import images as image_data
from research.diffusion import fid
from research.models import digits


def _leaves(params):
  return jax.tree_util.tree_leaves(jax.tree.map(np.asarray, params))


def test_same_seed_gives_the_same_weights(shared_data):
  mnist = str(shared_data("images", "mnist"))
  first, acc_first, _ = digits.train(mnist, seed=3, epochs=2, n_mnist=3000)
  second, acc_second, _ = digits.train(mnist, seed=3, epochs=2, n_mnist=3000)
  other, _, _ = digits.train(mnist, seed=4, epochs=2, n_mnist=3000)
  for a, b in zip(_leaves(first), _leaves(second)):
    np.testing.assert_array_equal(a, b)
  assert acc_first == acc_second
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(first), _leaves(other)))


def test_committed_weights_come_from_the_committed_code(shared_data):
  """Retraining with the defaults reproduces the recorded accuracy and the weights' behaviour.

  Bitwise equality holds only on one machine and XLA setup (these tests run with 8 fake
  devices, which changes float rounding), so the check is on accuracy and on predictions.
  """
  params, accuracy, _ = digits.train(str(shared_data("images", "mnist")))
  with open(digits.WEIGHTS[:-len(".npz")] + ".json") as f:
    record = json.load(f)
  for name, value in accuracy.items():
    assert record["test_accuracy"][name] == pytest.approx(value, abs=0.01), name
  assert accuracy["sklearn_digits"] > 0.95 and accuracy["mnist"] > 0.9
  x, _ = image_data.load_sklearn_digits()
  x_Bx64 = digits.to_8x8(x[:, :, :, None])
  model = digits.DigitsMLP()
  ours = np.argmax(model.apply({"params": params}, x_Bx64)[1], -1)
  committed = np.argmax(model.apply({"params": digits.load_params()}, x_Bx64)[1], -1)
  assert np.mean(ours == committed) > 0.97


def _noise(x, level, rng):
  return np.clip(x + rng.normal(0, level, x.shape), 0, 1)


def _blur(x, level, rng):
  del rng
  return ndimage.gaussian_filter(x, sigma=(0, level, level, 0)) if level else x


def _blackout(x, level, rng):
  del rng
  out = x.copy()
  out[:, x.shape[1] - int(round(level * x.shape[1])):] = 0
  return out


@pytest.mark.parametrize("corrupt,levels", [(_noise, [0, 0.1, 0.2, 0.4]),
                                            (_blur, [0, 0.7, 1.2, 2.0]),
                                            (_blackout, [0, 0.2, 0.4, 0.6])])
def test_distance_grows_with_corruption(shared_data, corrupt, levels):
  x, _ = image_data.load_mnist(str(shared_data("images", "mnist")), "test")
  x = x[..., None] / 255.0
  extract = digits.DigitsFeatures()
  real = fid.stats_of(extract(x[:2000]), "digits")
  rng = np.random.default_rng(0)
  distances = [fid.fd(real, fid.stats_of(extract(corrupt(x[2000:4000], level, rng))))
               for level in levels]
  assert np.all(np.diff(distances) > 0), distances
  assert distances[-1] > 10 * distances[0]


def test_features_of_8x8_and_28x28_inputs():
  x, _ = image_data.load_sklearn_digits()
  extract = digits.DigitsFeatures()
  f8 = extract(x[:5, ..., None])
  f28 = extract(np.zeros((3, 28, 28, 3), np.float32))
  assert f8.shape == (5, digits.FEATURE_DIM) and f28.shape == (3, digits.FEATURE_DIM)
  assert np.isfinite(f8).all() and f8.std() > 0


def test_idx_reader_joins_gzip_parts(shared_data):
  images = image_data.read_idx(str(shared_data("images", "mnist") /
                                   "train-images-idx3-ubyte.gz"))
  assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
