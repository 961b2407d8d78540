"""FID speed on the CPU: our Flax InceptionV3 against the PyTorch reference, and our Frechet
distance against scipy.linalg.sqrtm, each pair timed in the same run.

  python benchmarks/fid_speed.py [--rounds 3] [--batch 16] [--size 32] [--dim 2048]

Contenders alternate over several rounds (the machine is shared and noisy); medians and ratios
are printed. Both networks get the same random weights (ported by the same function that loads
pytorch-fid's file), so their outputs are also compared. Needs torch and torchvision for the
network half (the reference lives in tests/inception_reference.py); the distance half needs neither.
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

import numpy as np
import scipy.linalg

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research.diffusion import fid  # noqa: E402


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def alternate(contenders: dict, rounds: int) -> dict[str, float]:
  """Median seconds of each contender, running them in turn, once per round."""
  times = {name: [] for name in contenders}
  for _ in range(rounds):
    for name, fn in contenders.items():
      times[name].append(_timed(fn))
  return {name: statistics.median(t) for name, t in times.items()}


def fd_sqrtm(mu1, sigma1, mu2, sigma2) -> float:
  """pytorch-fid's form: the non-symmetric matrix square root of sigma1 @ sigma2."""
  root = scipy.linalg.sqrtm(sigma1 @ sigma2)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root).real)


def bench_distance(dim: int, rounds: int) -> None:
  rng = np.random.default_rng(0)
  n = dim + dim // 2
  x = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) / np.sqrt(dim)
  y = np.maximum(rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) / np.sqrt(dim),
                 0)
  a, b = fid.stats_of(x), fid.stats_of(y)
  values = {}
  contenders = {
      "ours (Cholesky + symmetric eigvalsh)":
          lambda: values.__setitem__("ours", fid.fd(a, b)),
      "scipy.linalg.sqrtm(S1 @ S2)":
          lambda: values.__setitem__("sqrtm", fd_sqrtm(a.mu, a.sigma, b.mu, b.sigma)),
  }
  medians = alternate(contenders, rounds)
  ours_s, sqrtm_s = medians.values()
  rel = abs(values["ours"] - values["sqrtm"]) / abs(values["sqrtm"])
  print(f"Frechet distance, d = {dim} ({n} samples per side), median of {rounds} rounds:")
  for name, seconds in medians.items():
    print(f"  {name:<40} {seconds:8.3f} s")
  print(f"  speed-up {sqrtm_s / ours_s:.1f}x (target >= 5x); values {values['ours']:.10g} vs "
        f"{values['sqrtm']:.10g}, relative difference {rel:.1e} (target <= 1e-8)")


def _load_reference():
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                      "inception_reference.py")
  spec = importlib.util.spec_from_file_location("inception_reference", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def bench_network(batch: int, size: int, rounds: int) -> None:
  import torch  # pylint: disable=import-outside-toplevel
  from research.models import inception  # pylint: disable=import-outside-toplevel
  reference = _load_reference()
  net = reference.fid_inception_reference()
  ours = inception.InceptionFeatures(inception.variables_from_state_dict(net.state_dict()))
  images = np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
  outputs = {}

  def run_torch():
    outputs["torch"] = reference.reference_features(net, images)[0]

  def run_ours():
    outputs["ours"] = ours(images)

  warm = {"ours": _timed(run_ours), "torch": _timed(run_torch)}
  medians = alternate({"ours (Flax, jit)": run_ours, "PyTorch reference": run_torch}, rounds)
  ours_s, torch_s = medians.values()
  rel = np.linalg.norm(outputs["ours"] - outputs["torch"]) / np.linalg.norm(outputs["torch"])
  print(f"InceptionV3 features, {batch} images {size}x{size} -> 299, CPU, median of {rounds} "
        f"rounds (torch threads: {torch.get_num_threads()}; first calls: ours "
        f"{warm['ours']:.1f} s incl. compile, torch {warm['torch']:.1f} s):")
  for name, seconds in medians.items():
    print(f"  {name:<40} {batch / seconds:8.2f} images/s")
  print(f"  ours / torch throughput {torch_s / ours_s:.2f} (target >= 1); outputs agree to "
        f"{rel:.1e} relative")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--skip", choices=["network", "distance"])
  args = parser.parse_args(argv)
  if args.skip != "network":
    bench_network(args.batch, args.size, args.rounds)
  if args.skip != "distance":
    bench_distance(args.dim, args.rounds)
  return 0


if __name__ == "__main__":
  sys.exit(main())
