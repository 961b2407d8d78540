"""python -m launch fid REAL FAKE [--features inception|digits] [--n N ...]: FID (or FD), KID.

Each side is a folder of images, an `.npz` holding an array of images (N, H, W[, C]), or a
statistics file (`.npz` with `mu` and `sigma`, as written by this command or the published
`fid_stats_*.npz`). Statistics computed from images are written to --out.
"""

import argparse
import os
import sys

import numpy as np

from research.errors import UserError

METRIC = {"inception": ("FID", "KID"), "digits": ("FD_digits", "KID_digits")}


def parse(argv):
  parser = argparse.ArgumentParser(
      prog="python -m launch fid", description=__doc__.split("\n\n", 1)[1],
      epilog="FD_digits is a Frechet distance in a small digit classifier's features: it is not "
             "FID and compares only with other FD_digits values. See docs/fid.md.")
  parser.add_argument("real", metavar="REAL", help="reference: folder, image .npz or stats .npz")
  parser.add_argument("fake", metavar="FAKE", help="samples: folder, image .npz or stats .npz")
  parser.add_argument("--features", choices=sorted(METRIC), default="inception",
                      help="feature extractor (default: inception, i.e. FID)")
  parser.add_argument("--n", type=int, nargs="+", metavar="N",
                      help="FAKE sample counts: the distance at each (first N samples), and its "
                           "extrapolation to infinitely many (Chong & Forsyth 2020) when several "
                           "are given; default: all samples")
  parser.add_argument("--weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth or "
                      "its .npz export (needed by --features inception; never downloaded)")
  parser.add_argument("--out", default=".", help="folder for the computed statistics (default .)")
  parser.add_argument("--json", help="also write the numbers to this JSON file")
  parser.add_argument("--batch-size", type=int, default=50)
  parser.add_argument("--kid-subsets", type=int, default=100)
  parser.add_argument("--kid-subset-size", type=int, default=1000)
  parser.add_argument("--kid-max", type=int, default=10000,
                      help="features kept per side for KID (default 10000)")
  args = parser.parse_args(argv)
  for name in ("batch_size", "kid_subsets", "kid_subset_size", "kid_max"):
    if getattr(args, name) < 1:
      raise UserError(f"--{name.replace('_', '-')} = {getattr(args, name)}: must be at least 1")
  if args.n and min(args.n) < 2:
    raise UserError(f"--n {min(args.n)}: a covariance needs at least 2 samples")
  return args


def _extractor(features: str, weights: str | None):
  if features == "digits":
    from research.models import digits  # pylint: disable=import-outside-toplevel
    return digits.DigitsFeatures()
  from research.models import inception  # pylint: disable=import-outside-toplevel
  if not weights:
    raise UserError("--features inception needs --weights PATH: pytorch-fid's "
                    f"{inception.WEIGHTS_FILE} or its .npz export (nothing is downloaded); for "
                    "small digit images use --features digits")
  return inception.InceptionFeatures(inception.load_variables(weights))


class Side:
  """One argument, REAL or FAKE: statistics at its counts and features kept for KID."""

  def __init__(self, label: str, path: str):
    from research.data import images  # pylint: disable=import-outside-toplevel
    from research.diffusion import fid  # pylint: disable=import-outside-toplevel
    self.label, self.path = label, path
    self.loaded = fid.load_stats(path) if fid.is_stats_file(path) else None
    self.images = None if self.loaded else images.open_images(path)
    self.stats, self.counts, self.kept = [], [], None
    self.name = os.path.basename(os.path.normpath(path)).removesuffix(".npz")

  def check_counts(self, counts) -> None:
    if self.images is None:
      return
    if self.images.n < 2:
      raise UserError(f"{self.label} {self.path!r} has {self.images.n} image(s); at least 2 "
                      "are needed")
    if counts and max(counts) > self.images.n:
      raise UserError(f"{self.label} {self.path!r} has {self.images.n} images; --n asks for "
                      f"{max(counts)}")

  def compute(self, extractor, counts, args):
    from research.diffusion import fid  # pylint: disable=import-outside-toplevel
    if self.loaded is not None:
      self._check_loaded(extractor, args.features)
      self.stats, self.counts = [self.loaded], [self.loaded.n]
      return
    counts = counts or [self.images.n]
    batches = (extractor(x) for x in self.images.batches(args.batch_size, max(counts)))
    self.stats, self.kept = fid.stats_at_counts(batches, counts, args.features, args.kid_max)
    self.counts = sorted(set(counts))
    out = os.path.join(args.out, f"{self.name}_{args.features}_stats.npz")
    fid.save_stats(out, self.stats[-1])
    print(f"{self.label}: wrote statistics of {self.counts[-1]} samples to {out}",
          file=sys.stderr)

  def _check_loaded(self, extractor, features):
    s = self.loaded
    if s.features and s.features != features:
      raise UserError(f"{self.label} statistics {self.path!r} were computed with features "
                      f"{s.features!r}, not {features!r}")
    if extractor is not None and s.mu.shape[0] != extractor.dim:
      raise UserError(f"{self.label} statistics {self.path!r} have dimension {s.mu.shape[0]}; "
                      f"--features {features} gives {extractor.dim}")

  def describe(self) -> str:
    kind = "statistics file" if self.loaded is not None else self.images.source
    n = self.counts[-1] if self.counts and self.counts[-1] else "unknown number of"
    return f"{self.label}: {n} samples ({kind})"


def report(real: Side, fake: Side, args) -> dict:
  from research.diffusion import fid  # pylint: disable=import-outside-toplevel
  fd_name, kid_name = METRIC[args.features]
  distances = [fid.fd(real.stats[-1], s) for s in fake.stats]
  lines = [real.describe(), fake.describe()]
  lines += [f"{fd_name} @ {n} samples: {d:.4f}" for n, d in zip(fake.counts, distances)]
  result = {"features": args.features, "metric": fd_name, "real_n": real.counts[-1],
            "fake_n": fake.counts, "distance": distances}
  if len(fake.counts) >= 2 and all(fake.counts):
    limit, slope = fid.extrapolate(fake.counts, distances)
    lines.append(f"{fd_name}_inf (Chong & Forsyth 2020, fit of {len(fake.counts)} counts): "
                 f"{limit:.4f}  (slope {slope:.4g} / N)")
    result["distance_inf"] = limit
  if real.kept is not None and fake.kept is not None:
    mean, std = fid.kid(real.kept, fake.kept, args.kid_subsets, args.kid_subset_size)
    size = min(args.kid_subset_size, len(real.kept), len(fake.kept))
    lines.append(f"{kid_name}: {mean:.6f} +- {std:.6f}  ({args.kid_subsets} subsets of {size})")
    result["kid"], result["kid_std"] = mean, std
  else:
    lines.append(f"{kid_name}: n/a (needs images on both sides, not statistics files)")
  print("\n".join(lines))
  return result


def main(argv: list[str]) -> int:
  args = parse(argv)
  real, fake = Side("REAL", args.real), Side("FAKE", args.fake)
  if args.n and fake.loaded is not None:
    raise UserError(f"--n needs images for FAKE, but {args.fake!r} is a statistics file")
  if real.name == fake.name:
    real.name, fake.name = f"{real.name}_real", f"{fake.name}_fake"
  real.check_counts(None)
  fake.check_counts(args.n)
  needs_features = real.loaded is None or fake.loaded is None
  extractor = _extractor(args.features, args.weights) if needs_features else None
  real.compute(extractor, None, args)
  fake.compute(extractor, args.n, args)
  result = report(real, fake, args)
  if args.json:
    from research.fileio import atomic_write_json  # pylint: disable=import-outside-toplevel
    atomic_write_json(args.json, result)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
