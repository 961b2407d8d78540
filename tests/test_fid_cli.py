"""python -m launch fid: end to end with the digits extractor, and bad input -> exit code 2."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from launch.__main__ import main as launch
from research.data import images as image_data
from research.diffusion import fid
from research.models import inception as inc


def _write_pngs(folder, images_NxHxW):
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images_NxHxW):
    Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.png"))
  return str(folder)


@pytest.fixture
def mnist_sets(tmp_path, shared_data):
  x, _ = image_data.load_mnist(str(shared_data("images", "mnist")), "test")
  root = tmp_path
  real = str(root / "real.npz")
  np.savez(real, images=x[:1500])
  fake = _write_pngs(root / "fake", x[1500:1800])
  return real, fake, root


def test_digits_end_to_end_and_from_statistics(mnist_sets, capsys):
  real, fake, root = mnist_sets
  out = str(root / "stats")
  assert launch(["fid", real, fake, "--features", "digits", "--n", "100", "200", "300",
                 "--out", out, "--kid-subsets", "10", "--kid-subset-size", "100"]) == 0
  printed = capsys.readouterr().out
  assert "REAL: 1500 samples" in printed and "FAKE: 300 samples" in printed
  assert "FD_digits @ 300 samples" in printed and "FD_digits_inf" in printed
  assert "KID_digits" in printed and "FID" not in printed
  stats_real = os.path.join(out, "real_digits_stats.npz")
  stats_fake = os.path.join(out, "fake_digits_stats.npz")
  assert fid.load_stats(stats_real).n == 1500 and fid.load_stats(stats_fake).n == 300
  at_300 = float(printed.split("FD_digits @ 300 samples: ")[1].split()[0])
  result = str(root / "result.json")
  assert launch(["fid", stats_real, stats_fake, "--features", "digits", "--json", result]) == 0
  again = capsys.readouterr().out
  with open(result) as f:
    assert json.load(f)["distance"] == [pytest.approx(at_300, abs=1e-4)]
  assert float(again.split("FD_digits @ 300 samples: ")[1].split()[0]) == pytest.approx(at_300)
  assert "n/a" in again


def _random_inception_npz(path):
  """Random weights under pytorch-fid's names, written without torch."""
  rng = np.random.default_rng(0)
  arrays = {}
  for name, (_, shape) in inc.expected_shapes().items():
    if name.endswith("conv.weight"):
      arrays[name] = rng.normal(0, (2 / np.prod(shape[1:])) ** 0.5, shape).astype(np.float32)
    elif name.endswith(("bn.weight", "running_var")):
      arrays[name] = np.ones(shape, np.float32)
    else:
      arrays[name] = np.zeros(shape, np.float32)
  np.savez(path, **arrays)
  return str(path)


def test_inception_end_to_end_with_random_weights(tmp_path, capsys):
  weights = _random_inception_npz(tmp_path / "random_inception.npz")
  rng = np.random.default_rng(1)
  np.savez(tmp_path / "a.npz", rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8))
  np.savez(tmp_path / "b.npz", rng.integers(0, 256, (4, 8, 8), dtype=np.uint8))  # grey
  code = launch(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--weights", weights,
                 "--out", str(tmp_path), "--kid-subsets", "2", "--batch-size", "4"])
  printed = capsys.readouterr().out
  assert code == 0 and "FID @ 4 samples" in printed and "KID" in printed
  assert "REAL: 5 samples" in printed  # batches of 4 and 1 (padded to 4)
  assert fid.load_stats(str(tmp_path / "a_inception_stats.npz")).mu.shape == (2048,)


def _bad_inputs(tmp_path):
  """(name, argv, expected message fragment) for each kind of bad input."""
  rng = np.random.default_rng(2)
  good = str(tmp_path / "good.npz")
  np.savez(good, rng.integers(0, 256, (10, 8, 8), dtype=np.uint8))
  sizes = _write_pngs(tmp_path / "sizes", [np.zeros((8, 8), np.uint8)])
  Image.fromarray(np.zeros((9, 8), np.uint8)).save(os.path.join(sizes, "1.png"))
  channels = _write_pngs(tmp_path / "channels", [np.zeros((8, 8), np.uint8)])
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(channels, "1.png"))
  cases = {
      "range.npz": rng.uniform(0, 2, (10, 8, 8)).astype(np.float32),
      "one.npz": np.zeros((1, 8, 8), np.uint8),
      "chw.npz": np.zeros((10, 3, 8, 8), np.uint8),
  }
  for name, array in cases.items():
    np.savez(tmp_path / name, array)
  np.savez(tmp_path / "shapes.npz", mu=np.zeros(64), sigma=np.zeros((63, 63)))
  np.savez(tmp_path / "resnet.npz", **{"conv1.weight": np.zeros((64, 3, 7, 7))})
  d = ["--features", "digits", "--out", str(tmp_path)]
  return [
      ("mixed sizes", [sizes, good] + d, "must share one size"),
      ("mixed channels", [channels, good] + d, "must share one size and channel count"),
      ("out of range", [str(tmp_path / "range.npz"), good] + d, "expected [0, 1]"),
      ("one sample", [str(tmp_path / "one.npz"), good] + d, "at least 2"),
      ("channels first", [str(tmp_path / "chw.npz"), good] + d, "channels first"),
      ("stats shapes", [str(tmp_path / "shapes.npz"), good] + d, "sigma (63, 63)"),
      ("not inception", [good, good, "--weights", str(tmp_path / "resnet.npz")],
       "not pytorch-fid's FID InceptionV3"),
      ("no weights", [good, good], "needs --weights"),
      ("missing", [str(tmp_path / "nothing"), good] + d, "neither a folder"),
      ("--n too big", [good, good, "--n", "50"] + d, "has 10 images"),
  ]


def test_bad_input_is_a_clear_message_and_exit_code_2(tmp_path, capsys):
  for name, argv, fragment in _bad_inputs(tmp_path):
    assert launch(["fid"] + argv) == 2, name
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err, (name, err)
    assert "Traceback" not in err
